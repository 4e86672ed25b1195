package main

// franz-go (github.com/twmb/franz-go, kgo + kadm) against Sluice:
//   - an idempotent acks=all producer with every codec, read back with exact offsets, keys, values,
//     headers, timestamps and the producer id stamped on the batches;
//   - a consumer group of two members on a 3-partition topic consuming records produced after the
//     group is stable, each record once, committed; after one member leaves, the other resumes from
//     the commits (no old record again, every new one);
//   - kadm: topics (create/list/describe/delete), configs (describe, incremental and whole alter),
//     partitions, offsets (start, end, by time), records deletion, groups (list, describe, commit,
//     fetch, delete).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func franzOpts(bootstrap string, extra ...kgo.Opt) []kgo.Opt {
	return append([]kgo.Opt{
		kgo.SeedBrokers(bootstrap),
		kgo.ClientID("sluice-compat-franz-go"),
		kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelWarn, func() string { return "franz-go log: " })),
		kgo.RetryTimeout(20 * time.Second),
	}, extra...)
}

func runFranz(bootstrap string) {
	c := newChecker("franz-go")
	ctx, cancel := context.WithDeadline(context.Background(), c.deadline)
	defer cancel()
	run := runID()

	// kadm caches metadata for MetadataMinAge (default 5 s): short, so that ListTopics right after a
	// deletion or CreatePartitions shows the broker's answer, not the client's memory.
	adminClient, err := kgo.NewClient(franzOpts(bootstrap, kgo.MetadataMinAge(100*time.Millisecond))...)
	c.check(err, "admin client")
	defer adminClient.Close()
	adm := kadm.NewClient(adminClient)

	franzProduceRead(ctx, c, bootstrap, adm, run)
	c.logf("produce/read-back OK")
	franzGroups(ctx, c, bootstrap, adm, run)
	c.logf("consumer group OK")
	franzAdmin(ctx, c, bootstrap, adm, run)
	c.logf("admin OK")
	fmt.Printf("franz-go: OK (%.1fs)\n", time.Since(c.started).Seconds())
}

// createTopic creates a topic and fails the run unless it was created with that many partitions.
func createTopic(ctx context.Context, c *checker, adm *kadm.Client, topic string, partitions int32,
	configs map[string]*string) {
	resp, err := adm.CreateTopics(ctx, partitions, 1, configs, topic)
	c.check(err, "CreateTopics "+topic)
	r, ok := resp[topic]
	if !ok || r.Err != nil {
		c.failf("CreateTopics %s: %+v", topic, r)
	}
	if r.NumPartitions != partitions {
		c.failf("CreateTopics %s: %d partitions in the response, want %d", topic, r.NumPartitions, partitions)
	}
}

func franzProduceRead(ctx context.Context, c *checker, bootstrap string, adm *kadm.Client, run string) {
	topic := "compat-franz-produce-" + run
	createTopic(ctx, c, adm, topic, 2, nil)

	codecs := []struct {
		name  string
		codec kgo.CompressionCodec
	}{
		{"none", kgo.NoCompression()},
		{"gzip", kgo.GzipCompression()},
		{"snappy", kgo.SnappyCompression()},
		{"lz4", kgo.Lz4Compression()},
		{"zstd", kgo.ZstdCompression()},
	}
	const perCodec = 20
	base := time.Now().Add(-time.Hour).UnixMilli()
	var want []rec
	producerIDs := map[int64]bool{}
	next := map[int32]int64{}
	for ci, codec := range codecs {
		producer, err := kgo.NewClient(franzOpts(bootstrap,
			kgo.RequiredAcks(kgo.AllISRAcks()),
			kgo.ProducerBatchCompression(codec.codec),
			kgo.RecordPartitioner(kgo.ManualPartitioner()),
		)...)
		c.check(err, "producer client")
		var records []*kgo.Record
		for i := 0; i < perCodec; i++ {
			n := ci*perCodec + i
			records = append(records, &kgo.Record{
				Topic:     topic,
				Partition: int32(n % 2),
				Key:       []byte(fmt.Sprintf("key-%s-%d", codec.name, i)),
				// Compressible, so the codecs have something to do.
				Value:     []byte(fmt.Sprintf("value-%s-%d-%0100d", codec.name, i, n)),
				Headers:   []kgo.RecordHeader{{Key: "codec", Value: []byte(codec.name)}, {Key: "n", Value: []byte(fmt.Sprint(n))}},
				Timestamp: time.UnixMilli(base + int64(n)),
			})
		}
		results := producer.ProduceSync(ctx, records...)
		c.check(results.FirstErr(), "produce with "+codec.name)
		for _, r := range results {
			p := r.Record.Partition
			if r.Record.Offset != next[p] {
				c.failf("%s: record %q acknowledged at p%d@%d, want offset %d", codec.name, r.Record.Key, p,
					r.Record.Offset, next[p])
			}
			next[p]++
			want = append(want, rec{p, r.Record.Offset, string(r.Record.Key), string(r.Record.Value)})
		}
		id, epoch, err := producer.ProducerID(ctx)
		c.check(err, "ProducerID")
		if id < 0 || epoch < 0 {
			c.failf("%s producer is not idempotent: producer id %d epoch %d", codec.name, id, epoch)
		}
		producerIDs[id] = true
		producer.Close()
	}

	consumer, err := kgo.NewClient(franzOpts(bootstrap,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
			topic: {0: kgo.NewOffset().AtStart(), 1: kgo.NewOffset().AtStart()},
		}),
		kgo.FetchMaxWait(500*time.Millisecond),
	)...)
	c.check(err, "consumer client")
	defer consumer.Close()
	var got []rec
	for len(got) < len(want) {
		if ctx.Err() != nil {
			c.failf("read back: %d of %d records before the deadline", len(got), len(want))
		}
		fetches := consumer.PollFetches(ctx)
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				c.failf("fetch %s/%d: %v", t, p, err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			got = append(got, rec{r.Partition, r.Offset, string(r.Key), string(r.Value)})
			var codec, n string
			for _, h := range r.Headers {
				switch h.Key {
				case "codec":
					codec = string(h.Value)
				case "n":
					n = string(h.Value)
				}
			}
			if len(r.Headers) != 2 || codec == "" || !strings.HasPrefix(string(r.Key), "key-"+codec+"-") {
				c.failf("record p%d@%d %q: headers %v", r.Partition, r.Offset, r.Key, r.Headers)
			}
			var num int64
			if _, err := fmt.Sscan(n, &num); err != nil || r.Timestamp.UnixMilli() != base+num {
				c.failf("record p%d@%d: timestamp %d, want %d (header n=%q)", r.Partition, r.Offset,
					r.Timestamp.UnixMilli(), base+num, n)
			}
			if !producerIDs[r.ProducerID] {
				c.failf("record p%d@%d: producer id %d is none of the producers' %v", r.Partition, r.Offset,
					r.ProducerID, producerIDs)
			}
		})
	}
	c.sameRecs("read back", got, want)

	// Offsets by time: the first record at or after base+7 is record n=7 (partition 1, offset 3).
	byTime, err := adm.ListOffsetsAfterMilli(ctx, base+7, topic)
	c.check(err, "ListOffsetsAfterMilli")
	c.check(byTime.Error(), "ListOffsetsAfterMilli")
	if o, _ := byTime.Lookup(topic, 1); o.Offset != 3 {
		c.failf("ListOffsetsAfterMilli(base+7) p1 = %+v, want offset 3", o)
	}
	if o, _ := byTime.Lookup(topic, 0); o.Offset != 4 {
		c.failf("ListOffsetsAfterMilli(base+7) p0 = %+v, want offset 4", o)
	}
	_, err = adm.DeleteTopics(ctx, topic)
	c.check(err, "DeleteTopics")
}

// member is one consumer of the group test, with what it owns and what it consumed.
type member struct {
	name     string
	cl       *kgo.Client
	mu       sync.Mutex
	owned    map[int32]bool
	seen     []rec
	stopping bool
	done     chan struct{}
}

func (m *member) assigned() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ps []int32
	for p := range m.owned {
		ps = append(ps, p)
	}
	return ps
}

func (m *member) consumed() []rec {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]rec(nil), m.seen...)
}

func startMember(ctx context.Context, c *checker, bootstrap, group, topic, name string) *member {
	m := &member{name: name, owned: map[int32]bool{}, done: make(chan struct{})}
	drop := func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, p := range lost[topic] {
			delete(m.owned, p)
		}
	}
	cl, err := kgo.NewClient(franzOpts(bootstrap,
		kgo.ClientID("sluice-compat-franz-go-"+name),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(),
		kgo.SessionTimeout(10*time.Second),
		kgo.HeartbeatInterval(300*time.Millisecond),
		kgo.FetchMaxWait(500*time.Millisecond),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, added map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			for _, p := range added[topic] {
				m.owned[p] = true
			}
		}),
		kgo.OnPartitionsRevoked(drop),
		kgo.OnPartitionsLost(drop),
	)...)
	c.check(err, "group member "+name)
	m.cl = cl
	go func() {
		defer close(m.done)
		for {
			fetches := cl.PollFetches(ctx)
			m.mu.Lock()
			stopping := m.stopping
			m.mu.Unlock()
			if stopping || fetches.IsClientClosed() || ctx.Err() != nil {
				return
			}
			fetches.EachError(func(t string, p int32, err error) {
				c.failf("member %s: fetch %s/%d: %v", name, t, p, err)
			})
			records := fetches.Records()
			if len(records) == 0 {
				continue
			}
			// Committed before they count as consumed: a record in `seen` is a committed one.
			if err := cl.CommitRecords(ctx, records...); err != nil {
				c.failf("member %s: commit: %v", name, err)
			}
			m.mu.Lock()
			for _, r := range records {
				m.seen = append(m.seen, rec{r.Partition, r.Offset, string(r.Key), string(r.Value)})
			}
			m.mu.Unlock()
		}
	}()
	return m
}

func (m *member) stop() {
	m.mu.Lock()
	m.stopping = true
	m.mu.Unlock()
	m.cl.Close() // leaves the group (LeaveGroup), no commit (auto-commit is off)
	<-m.done
}

func produceTo(ctx context.Context, c *checker, producer *kgo.Client, topic, prefix string, perPartition,
	partitions int) []rec {
	var records []*kgo.Record
	for i := 0; i < perPartition*partitions; i++ {
		records = append(records, &kgo.Record{
			Topic:     topic,
			Partition: int32(i % partitions),
			Key:       []byte(fmt.Sprintf("%s-%d", prefix, i)),
			Value:     []byte(fmt.Sprintf("%s-value-%d", prefix, i)),
		})
	}
	results := producer.ProduceSync(ctx, records...)
	c.check(results.FirstErr(), "produce "+prefix)
	var out []rec
	for _, r := range results {
		out = append(out, rec{r.Record.Partition, r.Record.Offset, string(r.Record.Key), string(r.Record.Value)})
	}
	return out
}

func franzGroups(ctx context.Context, c *checker, bootstrap string, adm *kadm.Client, run string) {
	topic := "compat-franz-group-" + run
	group := "compat-franz-group-" + run
	const partitions = 3
	createTopic(ctx, c, adm, topic, partitions, nil)
	producer, err := kgo.NewClient(franzOpts(bootstrap,
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)...)
	c.check(err, "producer client")
	defer producer.Close()

	a := startMember(ctx, c, bootstrap, group, topic, "a")
	b := startMember(ctx, c, bootstrap, group, topic, "b")
	c.waitFor("a stable group of two members owning the 3 partitions", 30*time.Second, func() bool {
		pa, pb := a.assigned(), b.assigned()
		if len(pa) == 0 || len(pb) == 0 || len(pa)+len(pb) != partitions {
			return false
		}
		described, err := adm.DescribeGroups(ctx, group)
		if err != nil {
			return false
		}
		d := described[group]
		return d.Err == nil && d.State == "Stable" && len(d.Members) == 2
	})
	described, err := adm.DescribeGroups(ctx, group)
	c.check(err, "DescribeGroups")
	d := described[group]
	if d.ProtocolType != "consumer" || d.Protocol != "cooperative-sticky" {
		c.failf("DescribeGroups: protocol type %q protocol %q, want consumer / cooperative-sticky",
			d.ProtocolType, d.Protocol)
	}
	if got := d.AssignedPartitions()[topic]; len(got) != partitions {
		c.failf("DescribeGroups: assigned partitions %v, want all %d", d.AssignedPartitions(), partitions)
	}
	listed, err := adm.ListGroups(ctx)
	c.check(err, "ListGroups")
	if l, ok := listed[group]; !ok || l.ProtocolType != "consumer" || l.State != "Stable" {
		c.failf("ListGroups: %s is %+v (present %v), want a Stable consumer group", group, l, ok)
	}
	c.logf("group stable: a owns %v, b owns %v", a.assigned(), b.assigned())

	// Produced only now, with the group stable.
	first := produceTo(ctx, c, producer, topic, "first", 10, partitions)
	c.waitFor("both members to consume the first records", 20*time.Second, func() bool {
		return len(a.consumed())+len(b.consumed()) >= len(first)
	})
	ca, cb := a.consumed(), b.consumed()
	if len(ca) == 0 || len(cb) == 0 {
		c.failf("one member consumed nothing: a %d, b %d records", len(ca), len(cb))
	}
	c.sameRecs("records consumed by the group", append(ca, cb...), first)
	for _, r := range ca {
		for _, p := range b.assigned() {
			if r.Partition == p {
				c.failf("a consumed %v from b's partition", r)
			}
		}
	}

	// b leaves; a takes over b's partitions from b's commits: no first record again.
	b.stop()
	c.waitFor("a to own all 3 partitions after b left", 20*time.Second, func() bool {
		return len(a.assigned()) == partitions
	})
	second := produceTo(ctx, c, producer, topic, "second", 5, partitions)
	c.waitFor("a to consume the second records", 20*time.Second, func() bool {
		return len(a.consumed()) >= len(ca)+len(second)
	})
	c.sameRecs("records a consumed after b left", a.consumed()[len(ca):], second)

	committed, err := adm.FetchOffsets(ctx, group)
	c.check(err, "FetchOffsets")
	c.check(committed.Error(), "FetchOffsets")
	for p := int32(0); p < partitions; p++ {
		o, ok := committed.Lookup(topic, p)
		if !ok || o.At != 15 {
			c.failf("committed offset of p%d is %+v (present %v), want 15", p, o, ok)
		}
	}
	a.stop()
	c.waitFor("the group to be Empty after both left", 10*time.Second, func() bool {
		described, err := adm.DescribeGroups(ctx, group)
		return err == nil && described[group].State == "Empty" && len(described[group].Members) == 0
	})
	deleted, err := adm.DeleteGroups(ctx, group)
	c.check(err, "DeleteGroups")
	if deleted[group].Err != nil {
		c.failf("DeleteGroups: %v", deleted[group].Err)
	}
	_, err = adm.DeleteTopics(ctx, topic)
	c.check(err, "DeleteTopics")
}

func configOf(ctx context.Context, c *checker, adm *kadm.Client, topic, key string) kadm.Config {
	configs, err := adm.DescribeTopicConfigs(ctx, topic)
	c.check(err, "DescribeTopicConfigs")
	rc, err := configs.On(topic, nil)
	c.check(err, "DescribeTopicConfigs "+topic)
	if rc.Err != nil {
		c.failf("DescribeTopicConfigs %s: %v", topic, rc.Err)
	}
	for _, cfg := range rc.Configs {
		if cfg.Key == key {
			return cfg
		}
	}
	c.failf("DescribeTopicConfigs %s: no %s among %d configs", topic, key, len(rc.Configs))
	return kadm.Config{}
}

func expectConfig(ctx context.Context, c *checker, adm *kadm.Client, topic, key, value string,
	source kmsg.ConfigSource) {
	cfg := configOf(ctx, c, adm, topic, key)
	if cfg.MaybeValue() != value || cfg.Source != source {
		c.failf("config %s of %s = %q (source %v), want %q (source %v)", key, topic, cfg.MaybeValue(),
			cfg.Source, value, source)
	}
}

func franzAdmin(ctx context.Context, c *checker, bootstrap string, adm *kadm.Client, run string) {
	topic := "compat-franz-admin-" + run
	group := "compat-franz-admin-" + run
	hour := "3600000"
	createTopic(ctx, c, adm, topic, 2, map[string]*string{"retention.ms": &hour})
	again, err := adm.CreateTopics(ctx, 2, 1, nil, topic)
	c.check(err, "CreateTopics again")
	if !errors.Is(again[topic].Err, kerr.TopicAlreadyExists) {
		c.failf("creating %s twice: %v, want TOPIC_ALREADY_EXISTS", topic, again[topic].Err)
	}

	brokers, err := adm.ListBrokers(ctx)
	c.check(err, "ListBrokers")
	if len(brokers) == 0 {
		c.failf("ListBrokers: no brokers")
	}
	topics, err := adm.ListTopics(ctx)
	c.check(err, "ListTopics")
	t, ok := topics[topic]
	if !ok || t.Err != nil || len(t.Partitions) != 2 {
		c.failf("ListTopics: %s is %+v (present %v), want 2 partitions", topic, t, ok)
	}
	for _, p := range t.Partitions {
		if p.Leader != brokers[0].NodeID || p.Err != nil {
			c.failf("ListTopics: partition %d leader %d err %v, want leader %d", p.Partition, p.Leader, p.Err,
				brokers[0].NodeID)
		}
	}

	c.logf("admin: topics created and listed")

	// Configs: the one given at creation, then an incremental alter, then a whole (non-incremental) one.
	expectConfig(ctx, c, adm, topic, "retention.ms", hour, kmsg.ConfigSourceDynamicTopicConfig)
	bigger := "2000000"
	altered, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "max.message.bytes", Value: &bigger},
		{Op: kadm.DeleteConfig, Name: "retention.ms"},
	}, topic)
	c.check(err, "AlterTopicConfigs")
	if r, _ := altered.On(topic, nil); r.Err != nil {
		c.failf("AlterTopicConfigs: %v %s", r.Err, r.ErrMessage)
	}
	expectConfig(ctx, c, adm, topic, "max.message.bytes", bigger, kmsg.ConfigSourceDynamicTopicConfig)
	if cfg := configOf(ctx, c, adm, topic, "retention.ms"); cfg.Source == kmsg.ConfigSourceDynamicTopicConfig ||
		cfg.MaybeValue() != "604800000" {
		c.failf("retention.ms after its deletion: %q (source %v), want the default 604800000", cfg.MaybeValue(),
			cfg.Source)
	}
	twoHours := "7200000"
	altered, err = adm.AlterTopicConfigsState(ctx, []kadm.AlterConfig{{Name: "retention.ms", Value: &twoHours}}, topic)
	c.check(err, "AlterTopicConfigsState")
	if r, _ := altered.On(topic, nil); r.Err != nil {
		c.failf("AlterTopicConfigsState: %v %s", r.Err, r.ErrMessage)
	}
	expectConfig(ctx, c, adm, topic, "retention.ms", twoHours, kmsg.ConfigSourceDynamicTopicConfig)
	if cfg := configOf(ctx, c, adm, topic, "max.message.bytes"); cfg.Source == kmsg.ConfigSourceDynamicTopicConfig {
		c.failf("max.message.bytes survived a whole-set AlterConfigs: %q", cfg.MaybeValue())
	}
	bad := "soon"
	altered, err = adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: &bad}}, topic)
	c.check(err, "AlterTopicConfigs (bad value)")
	if r, _ := altered.On(topic, nil); !errors.Is(r.Err, kerr.InvalidConfig) {
		c.failf("retention.ms=soon: %v, want INVALID_CONFIG", r.Err)
	}

	c.logf("admin: configs described and altered")

	// Partitions 2 -> 3.
	added, err := adm.CreatePartitions(ctx, 1, topic)
	c.check(err, "CreatePartitions")
	c.check(added.Error(), "CreatePartitions")
	topics, err = adm.ListTopics(ctx, topic)
	c.check(err, "ListTopics")
	if n := len(topics[topic].Partitions); n != 3 {
		c.failf("after CreatePartitions(+1): %d partitions, want 3", n)
	}

	c.logf("admin: partitions created")

	// Offsets and records deletion: 6 records in p0, 3 in p1, 1 in p2.
	producer, err := kgo.NewClient(franzOpts(bootstrap,
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)...)
	c.check(err, "producer client")
	defer producer.Close()
	var records []*kgo.Record
	for i, p := range []int32{0, 0, 0, 0, 0, 0, 1, 1, 1, 2} {
		records = append(records, &kgo.Record{Topic: topic, Partition: p, Value: []byte(fmt.Sprint(i))})
	}
	c.check(producer.ProduceSync(ctx, records...).FirstErr(), "produce")
	expectOffsets := func(what string, listed kadm.ListedOffsets, err error, want []int64) {
		c.check(err, what)
		c.check(listed.Error(), what)
		for p, w := range want {
			if o, ok := listed.Lookup(topic, int32(p)); !ok || o.Offset != w {
				c.failf("%s p%d: %+v (present %v), want %d", what, p, o, ok, w)
			}
		}
	}
	start, err := adm.ListStartOffsets(ctx, topic)
	expectOffsets("ListStartOffsets", start, err, []int64{0, 0, 0})
	end, err := adm.ListEndOffsets(ctx, topic)
	expectOffsets("ListEndOffsets", end, err, []int64{6, 3, 1})
	deletedRecords, err := adm.DeleteRecords(ctx, kadm.Offsets{topic: {0: {Topic: topic, Partition: 0, At: 4}}})
	c.check(err, "DeleteRecords")
	if r, _ := deletedRecords.Lookup(topic, 0); r.Err != nil || r.LowWatermark != 4 {
		c.failf("DeleteRecords p0 before 4: %+v", r)
	}
	start, err = adm.ListStartOffsets(ctx, topic)
	expectOffsets("ListStartOffsets after DeleteRecords", start, err, []int64{4, 0, 0})
	reader, err := kgo.NewClient(franzOpts(bootstrap,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchMaxWait(500*time.Millisecond),
	)...)
	c.check(err, "reader client")
	fetches := reader.PollFetches(ctx)
	c.check(fetches.Err(), "fetch after DeleteRecords")
	if rs := fetches.Records(); len(rs) == 0 || rs[0].Offset != 4 || string(rs[0].Value) != "4" {
		c.failf("first record after DeleteRecords: %v, want offset 4", rs)
	}
	reader.Close()

	c.logf("admin: offsets listed, records deleted")

	// Groups: commit offsets for a group without members, fetch them, list, describe, delete.
	commit := kadm.Offsets{topic: {
		0: {Topic: topic, Partition: 0, At: 5, LeaderEpoch: -1, Metadata: "compat"},
		1: {Topic: topic, Partition: 1, At: 2, LeaderEpoch: -1},
	}}
	committed, err := adm.CommitOffsets(ctx, group, commit)
	c.check(err, "CommitOffsets")
	c.check(committed.Error(), "CommitOffsets")
	fetched, err := adm.FetchOffsets(ctx, group)
	c.check(err, "FetchOffsets")
	c.check(fetched.Error(), "FetchOffsets")
	for p, want := range map[int32]int64{0: 5, 1: 2} {
		if o, ok := fetched.Lookup(topic, p); !ok || o.At != want {
			c.failf("FetchOffsets p%d: %+v (present %v), want %d", p, o, ok, want)
		}
	}
	if o, _ := fetched.Lookup(topic, 0); o.Metadata != "compat" {
		c.failf("FetchOffsets p0 metadata %q, want \"compat\"", o.Metadata)
	}
	if _, ok := fetched.Lookup(topic, 2); ok {
		c.failf("FetchOffsets: p2 was never committed but is listed")
	}
	lag, err := adm.Lag(ctx, group)
	c.check(err, "Lag")
	l := lag[group]
	c.check(l.Error(), "Lag")
	for p, want := range map[int32]int64{0: 6 - 5, 1: 3 - 2} {
		if got := l.Lag[topic][p]; got.Lag != want {
			c.failf("Lag of %s p%d: %+v, want %d", group, p, got, want)
		}
	}
	listed, err := adm.ListGroups(ctx)
	c.check(err, "ListGroups")
	if _, ok := listed[group]; !ok {
		c.failf("ListGroups: %s missing from %v", group, listed.Groups())
	}
	described, err := adm.DescribeGroups(ctx, group)
	c.check(err, "DescribeGroups")
	if d := described[group]; d.Err != nil || d.State != "Empty" || len(d.Members) != 0 {
		c.failf("DescribeGroups %s: %+v, want Empty without members", group, d)
	}
	deletedGroups, err := adm.DeleteGroups(ctx, group)
	c.check(err, "DeleteGroups")
	if deletedGroups[group].Err != nil {
		c.failf("DeleteGroups: %v", deletedGroups[group].Err)
	}
	fetched, err = adm.FetchOffsets(ctx, group)
	if err == nil && len(fetched) != 0 {
		c.failf("FetchOffsets after DeleteGroups: %v", fetched)
	}

	c.logf("admin: group offsets committed, fetched, group deleted")

	dropped, err := adm.DeleteTopics(ctx, topic)
	c.check(err, "DeleteTopics")
	c.check(dropped.Error(), "DeleteTopics")
	c.waitFor("the deleted topic to disappear from ListTopics", 10*time.Second, func() bool {
		topics, err := adm.ListTopics(ctx)
		return err == nil && !topics.Has(topic)
	})
	c.logf("admin: topic deleted")
	missing, err := adm.DeleteTopics(ctx, topic)
	c.check(err, "DeleteTopics again")
	if !errors.Is(missing[topic].Err, kerr.UnknownTopicOrPartition) {
		c.failf("deleting %s twice: %v, want UNKNOWN_TOPIC_OR_PARTITION", topic, missing[topic].Err)
	}
}
