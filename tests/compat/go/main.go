// Command compat-go runs the Go clients of the client compatibility matrix against a Kafka
// bootstrap address: franz-go (with kadm) and IBM Sarama. Every check is an assertion; the first
// failure prints the reason and exits 1.
//
// Usage: compat-go franz-go|sarama BOOTSTRAP
package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

// runTimeout bounds a whole client run; each wait below is bounded by it too.
const runTimeout = 55 * time.Second

// checker carries the client name for messages and the run's deadline.
type checker struct {
	name     string
	deadline time.Time
	started  time.Time
}

func newChecker(name string) *checker {
	now := time.Now()
	return &checker{name: name, deadline: now.Add(runTimeout), started: now}
}

func (c *checker) failf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s: FAIL (after %.1fs): %s\n", c.name, time.Since(c.started).Seconds(),
		fmt.Sprintf(format, args...))
	os.Exit(1)
}

func (c *checker) check(err error, what string) {
	if err != nil {
		c.failf("%s: %v", what, err)
	}
}

func (c *checker) logf(format string, args ...any) {
	fmt.Printf("%s: [%5.1fs] %s\n", c.name, time.Since(c.started).Seconds(), fmt.Sprintf(format, args...))
}

// waitFor polls cond every 50 ms until it holds, failing the run when the run deadline (or the
// given limit, whichever is sooner) passes first.
func (c *checker) waitFor(what string, limit time.Duration, cond func() bool) {
	deadline := time.Now().Add(limit)
	if c.deadline.Before(deadline) {
		deadline = c.deadline
	}
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			c.failf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rec is one record as the tests compare it: where it is and what it holds.
type rec struct {
	Partition int32
	Offset    int64
	Key       string
	Value     string
}

func (r rec) String() string {
	return fmt.Sprintf("p%d@%d %q=%q", r.Partition, r.Offset, r.Key, r.Value)
}

func sortRecs(rs []rec) {
	sort.Slice(rs, func(i, j int) bool {
		if rs[i].Partition != rs[j].Partition {
			return rs[i].Partition < rs[j].Partition
		}
		return rs[i].Offset < rs[j].Offset
	})
}

// sameRecs fails unless got and want hold the same records (order-insensitive).
func (c *checker) sameRecs(what string, got, want []rec) {
	g := append([]rec(nil), got...)
	w := append([]rec(nil), want...)
	sortRecs(g)
	sortRecs(w)
	if len(g) != len(w) {
		c.failf("%s: got %d records, want %d\ngot:  %v\nwant: %v", what, len(g), len(w), g, w)
	}
	for i := range g {
		if g[i] != w[i] {
			c.failf("%s: record %d is %v, want %v", what, i, g[i], w[i])
		}
	}
}

func runID() string {
	return fmt.Sprintf("%d", time.Now().UnixNano())
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: compat-go franz-go|sarama BOOTSTRAP")
		os.Exit(2)
	}
	client, bootstrap := os.Args[1], os.Args[2]
	switch strings.ToLower(client) {
	case "franz-go":
		runFranz(bootstrap)
	case "sarama":
		runSarama(bootstrap)
	default:
		fmt.Fprintf(os.Stderr, "unknown client %q (franz-go or sarama)\n", client)
		os.Exit(2)
	}
}
