// Command compat-sarama122 runs Sarama 1.22.1 (github.com/Shopify/sarama, the version Debian 12
// ships as golang-github-shopify-sarama-dev) against a Kafka bootstrap address at
// Config.Version = V2_2_0_0, the configuration of the bug report that its consumer group failed
// against Sluice. Every check is an assertion; the first failure prints the reason and exits 1.
//
// Sarama 1.22 picks request versions from Config.Version alone (it never sends ApiVersions), so it
// sends versions Kafka 4 no longer serves: OffsetCommit v1 (its offset manager, whatever the
// version) and DescribeConfigs v0 (ClusterAdmin.DescribeConfig and ListTopics). Sluice serves both.
//
// Checked: an idempotent acks=all SyncProducer with every codec, read back by a PartitionConsumer
// with exact offsets, keys, values, headers and timestamps; a ConsumerGroup of two members on a
// 3-partition topic consuming records produced after the group is stable, each record once, its
// auto-commits stored (no error on the group's error channel); after one member leaves, the other
// takes its partitions and resumes from the commits; ClusterAdmin: topics, configs, partitions,
// records deletion, consumer groups and their offsets.
//
// Usage: compat-sarama122 BOOTSTRAP
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

// runTimeout bounds the whole run; every wait below is bounded by it too.
const runTimeout = 90 * time.Second

var (
	started  = time.Now()
	deadline = started.Add(runTimeout)
)

func failf(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "sarama-1.22.1: FAIL (after %.1fs): %s\n", time.Since(started).Seconds(),
		fmt.Sprintf(format, args...))
	os.Exit(1)
}

func check(err error, what string) {
	if err != nil {
		failf("%s: %v", what, err)
	}
}

func logf(format string, args ...interface{}) {
	fmt.Printf("sarama-1.22.1: [%5.1fs] %s\n", time.Since(started).Seconds(), fmt.Sprintf(format, args...))
}

// waitFor polls cond every 50 ms until it holds; the run fails when `limit` (or the run's
// deadline, whichever is sooner) passes first.
func waitFor(what string, limit time.Duration, cond func() bool) {
	end := time.Now().Add(limit)
	if deadline.Before(end) {
		end = deadline
	}
	for !cond() {
		if time.Now().After(end) {
			failf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rec is one record as the checks compare it.
type rec struct {
	Partition int32
	Offset    int64
	Key       string
	Value     string
}

func sameRecs(what string, got, want []rec) {
	sorted := func(rs []rec) []rec {
		out := append([]rec(nil), rs...)
		sort.Slice(out, func(i, j int) bool {
			if out[i].Partition != out[j].Partition {
				return out[i].Partition < out[j].Partition
			}
			return out[i].Offset < out[j].Offset
		})
		return out
	}
	g, w := sorted(got), sorted(want)
	if len(g) != len(w) {
		failf("%s: got %d records, want %d\ngot:  %v\nwant: %v", what, len(g), len(w), g, w)
	}
	for i := range g {
		if g[i] != w[i] {
			failf("%s: record %d is %+v, want %+v", what, i, g[i], w[i])
		}
	}
}

func config() *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_2_0_0
	cfg.ClientID = "sluice-compat-sarama-1.22.1"
	cfg.Net.DialTimeout = 10 * time.Second
	cfg.Metadata.Retry.Max = 20
	cfg.Metadata.Retry.Backoff = 100 * time.Millisecond
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Idempotent = true
	cfg.Net.MaxOpenRequests = 1
	cfg.Producer.Retry.Max = 5
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	cfg.Consumer.Return.Errors = true
	cfg.Consumer.MaxWaitTime = 500 * time.Millisecond
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	// Auto-commit (Sarama 1.22 has no synchronous commit) with OffsetCommit v1: Retention stays 0,
	// as in the bug report; a non-zero Retention would make Sarama send v2.
	cfg.Consumer.Offsets.CommitInterval = 200 * time.Millisecond
	cfg.Consumer.Group.Session.Timeout = 10 * time.Second
	cfg.Consumer.Group.Heartbeat.Interval = 300 * time.Millisecond
	cfg.Admin.Timeout = 10 * time.Second
	return cfg
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: compat-sarama122 BOOTSTRAP")
		os.Exit(2)
	}
	bootstrap := os.Args[1]
	if os.Getenv("SARAMA_LOG") == "1" {
		sarama.Logger = log.New(os.Stderr, "sarama log: ", log.Lmicroseconds)
	}
	run := fmt.Sprint(time.Now().UnixNano())
	admin, err := sarama.NewClusterAdmin([]string{bootstrap}, config())
	check(err, "NewClusterAdmin")
	defer admin.Close()

	produceRead(bootstrap, admin, run)
	zstdRefused(bootstrap, admin, run)
	logf("produce/read-back OK")
	groups(bootstrap, admin, run)
	logf("consumer group OK")
	clusterAdmin(bootstrap, admin, run)
	logf("cluster admin OK")
	fmt.Printf("sarama-1.22.1: OK (%.1fs)\n", time.Since(started).Seconds())
}

func createTopic(admin sarama.ClusterAdmin, topic string, partitions int32, configs map[string]*string) {
	check(admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1,
		ConfigEntries: configs}, false), "CreateTopic "+topic)
}

func header(hs []*sarama.RecordHeader, key string) string {
	for _, h := range hs {
		if string(h.Key) == key {
			return string(h.Value)
		}
	}
	return ""
}

// zstdRefused: Sarama 1.22 sends zstd batches in Produce v3, and Kafka (2.1 and later) only takes
// zstd from Produce v7 on: it answers UNSUPPORTED_COMPRESSION_TYPE (76), and so does Sluice. The
// send must fail with exactly that error, and nothing may be written.
func zstdRefused(bootstrap string, admin sarama.ClusterAdmin, run string) {
	topic := "compat-sarama122-zstd-" + run
	createTopic(admin, topic, 1, nil)
	cfg := config()
	cfg.Producer.Compression = sarama.CompressionZSTD
	producer, err := sarama.NewSyncProducer([]string{bootstrap}, cfg)
	check(err, "NewSyncProducer (zstd)")
	_, _, err = producer.SendMessage(&sarama.ProducerMessage{Topic: topic, Partition: 0,
		Value: sarama.StringEncoder("zstd")})
	if err == nil {
		failf("a zstd batch in Produce v3 was acknowledged; Kafka refuses it")
	}
	// The SyncProducer hands back the broker's error itself (or wrapped in a ProducerError).
	kerr, ok := err.(sarama.KError)
	var perr *sarama.ProducerError
	if !ok && errors.As(err, &perr) {
		kerr, ok = perr.Err.(sarama.KError)
	}
	if !ok || kerr != sarama.KError(76) {
		failf("zstd in Produce v3: got %v, want UNSUPPORTED_COMPRESSION_TYPE (76)", err)
	}
	check(producer.Close(), "SyncProducer.Close (zstd)")
}

func produceRead(bootstrap string, admin sarama.ClusterAdmin, run string) {
	topic := "compat-sarama122-produce-" + run
	createTopic(admin, topic, 2, nil)
	// zstd is checked apart (zstdRefused): Sarama 1.22 sends it in a Produce version below 7.
	codecs := []sarama.CompressionCodec{sarama.CompressionNone, sarama.CompressionGZIP,
		sarama.CompressionSnappy, sarama.CompressionLZ4}
	const perCodec = 20
	base := time.Now().Add(-time.Hour).UnixNano() / int64(time.Millisecond)
	var want []rec
	next := map[int32]int64{}
	for ci, codec := range codecs {
		cfg := config()
		cfg.Producer.Compression = codec
		producer, err := sarama.NewSyncProducer([]string{bootstrap}, cfg)
		check(err, fmt.Sprintf("NewSyncProducer (codec %d)", codec))
		var msgs []*sarama.ProducerMessage
		for i := 0; i < perCodec; i++ {
			n := ci*perCodec + i
			msgs = append(msgs, &sarama.ProducerMessage{
				Topic:     topic,
				Partition: int32(n % 2),
				Key:       sarama.StringEncoder(fmt.Sprintf("key-%d-%d", codec, i)),
				Value:     sarama.StringEncoder(fmt.Sprintf("value-%d-%d-%0100d", codec, i, n)),
				Headers: []sarama.RecordHeader{{Key: []byte("codec"), Value: []byte(fmt.Sprint(codec))},
					{Key: []byte("n"), Value: []byte(fmt.Sprint(n))}},
				Timestamp: time.Unix(0, (base+int64(n))*int64(time.Millisecond)),
			})
		}
		check(producer.SendMessages(msgs), fmt.Sprintf("SendMessages (codec %d)", codec))
		for _, m := range msgs {
			if m.Offset != next[m.Partition] {
				failf("codec %d: message %v acknowledged at p%d@%d, want offset %d", codec, m.Key,
					m.Partition, m.Offset, next[m.Partition])
			}
			next[m.Partition]++
			key, _ := m.Key.Encode()
			value, _ := m.Value.Encode()
			want = append(want, rec{m.Partition, m.Offset, string(key), string(value)})
		}
		check(producer.Close(), "SyncProducer.Close")
	}

	consumer, err := sarama.NewConsumer([]string{bootstrap}, config())
	check(err, "NewConsumer")
	defer consumer.Close()
	var got []rec
	timeout := time.After(20 * time.Second)
	for p := int32(0); p < 2; p++ {
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		check(err, fmt.Sprintf("ConsumePartition %d", p))
		for read := int64(0); read < next[p]; read++ {
			select {
			case m := <-pc.Messages():
				got = append(got, rec{m.Partition, m.Offset, string(m.Key), string(m.Value)})
				var n int64
				if _, err := fmt.Sscan(header(m.Headers, "n"), &n); err != nil || len(m.Headers) != 2 {
					failf("p%d@%d: headers %v", m.Partition, m.Offset, m.Headers)
				}
				if ms := m.Timestamp.UnixNano() / int64(time.Millisecond); ms != base+n {
					failf("p%d@%d: timestamp %d, want %d", m.Partition, m.Offset, ms, base+n)
				}
			case err := <-pc.Errors():
				failf("PartitionConsumer p%d: %v", p, err)
			case <-timeout:
				failf("read back: %d of %d records in 20 s", len(got), len(want))
			}
		}
		check(pc.Close(), "PartitionConsumer.Close")
	}
	sameRecs("read back", got, want)
	check(admin.DeleteTopic(topic), "DeleteTopic")
}

// member is one ConsumerGroup member: it marks every record it gets (auto-commit stores them).
type member struct {
	name  string
	group sarama.ConsumerGroup
	mu    sync.Mutex
	owned []int32
	seen  []rec
	done  chan struct{}
}

func (m *member) Setup(s sarama.ConsumerGroupSession) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.owned = nil
	for _, ps := range s.Claims() {
		m.owned = append(m.owned, ps...)
	}
	return nil
}

func (m *member) Cleanup(sarama.ConsumerGroupSession) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.owned = nil
	return nil
}

func (m *member) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for msg := range claim.Messages() {
		s.MarkMessage(msg, "")
		m.mu.Lock()
		m.seen = append(m.seen, rec{msg.Partition, msg.Offset, string(msg.Key), string(msg.Value)})
		m.mu.Unlock()
	}
	return nil
}

func (m *member) assigned() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]int32(nil), m.owned...)
}

func (m *member) consumed() []rec {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]rec(nil), m.seen...)
}

func startMember(ctx context.Context, bootstrap, groupID, topic, name string) *member {
	cfg := config()
	cfg.ClientID = "sluice-compat-sarama-1.22.1-" + name
	group, err := sarama.NewConsumerGroup([]string{bootstrap}, groupID, cfg)
	check(err, "NewConsumerGroup "+name)
	m := &member{name: name, group: group, done: make(chan struct{})}
	// Any error is a failure: the bug report's "insufficient data to decode packet" came here.
	go func() {
		for err := range group.Errors() {
			failf("member %s: %v", name, err)
		}
	}()
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			err := group.Consume(ctx, []string{topic}, m)
			if err == sarama.ErrClosedConsumerGroup || ctx.Err() != nil {
				return
			}
			if err != nil {
				failf("member %s: Consume: %v", name, err)
			}
		}
	}()
	return m
}

func (m *member) stop() {
	check(m.group.Close(), "ConsumerGroup.Close "+m.name)
	<-m.done
}

func produce(producer sarama.SyncProducer, topic, prefix string, perPartition, partitions int) []rec {
	var msgs []*sarama.ProducerMessage
	for i := 0; i < perPartition*partitions; i++ {
		msgs = append(msgs, &sarama.ProducerMessage{
			Topic:     topic,
			Partition: int32(i % partitions),
			Key:       sarama.StringEncoder(fmt.Sprintf("%s-%d", prefix, i)),
			Value:     sarama.StringEncoder(fmt.Sprintf("%s-value-%d", prefix, i)),
		})
	}
	check(producer.SendMessages(msgs), "SendMessages "+prefix)
	var out []rec
	for i, m := range msgs {
		out = append(out, rec{m.Partition, m.Offset, fmt.Sprintf("%s-%d", prefix, i),
			fmt.Sprintf("%s-value-%d", prefix, i)})
	}
	return out
}

func describeGroup(admin sarama.ClusterAdmin, group string) *sarama.GroupDescription {
	described, err := admin.DescribeConsumerGroups([]string{group})
	check(err, "DescribeConsumerGroups")
	if len(described) != 1 || described[0].GroupId != group {
		failf("DescribeConsumerGroups(%s): %d groups", group, len(described))
	}
	if described[0].Err != sarama.ErrNoError {
		failf("DescribeConsumerGroups(%s): %v", group, described[0].Err)
	}
	return described[0]
}

// committed reports whether every partition of topic has `want` committed for group.
func committed(admin sarama.ClusterAdmin, group, topic string, partitions int32, want int64) bool {
	ps := make([]int32, partitions)
	for p := range ps {
		ps[p] = int32(p)
	}
	offsets, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: ps})
	check(err, "ListConsumerGroupOffsets")
	for _, p := range ps {
		block := offsets.GetBlock(topic, p)
		if block == nil || block.Err != sarama.ErrNoError {
			failf("committed offset of p%d: %+v", p, block)
		}
		if block.Offset != want {
			return false
		}
	}
	return true
}

func groups(bootstrap string, admin sarama.ClusterAdmin, run string) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	topic := "compat-sarama122-group-" + run
	groupID := topic
	const partitions = 3
	createTopic(admin, topic, partitions, nil)
	producer, err := sarama.NewSyncProducer([]string{bootstrap}, config())
	check(err, "NewSyncProducer")
	defer producer.Close()

	a := startMember(ctx, bootstrap, groupID, topic, "a")
	b := startMember(ctx, bootstrap, groupID, topic, "b")
	waitFor("a stable group of two members owning the 3 partitions", 30*time.Second, func() bool {
		pa, pb := a.assigned(), b.assigned()
		if len(pa) == 0 || len(pb) == 0 || len(pa)+len(pb) != partitions {
			return false
		}
		d := describeGroup(admin, groupID)
		return d.State == "Stable" && len(d.Members) == 2
	})
	d := describeGroup(admin, groupID)
	if d.ProtocolType != "consumer" || d.Protocol != "range" {
		failf("DescribeConsumerGroups: protocol type %q protocol %q, want consumer / range", d.ProtocolType,
			d.Protocol)
	}
	owned := 0
	for id, m := range d.Members {
		assignment, err := m.GetMemberAssignment()
		check(err, "member assignment of "+id)
		owned += len(assignment.Topics[topic])
	}
	if owned != partitions {
		failf("DescribeConsumerGroups: %d partitions assigned, want %d", owned, partitions)
	}
	listed, err := admin.ListConsumerGroups()
	check(err, "ListConsumerGroups")
	if listed[groupID] != "consumer" {
		failf("ListConsumerGroups: %s has protocol type %q, want consumer", groupID, listed[groupID])
	}
	logf("group stable: a owns %v, b owns %v", a.assigned(), b.assigned())

	// Produced only now, with the group stable (the bug report's case).
	first := produce(producer, topic, "first", 10, partitions)
	waitFor("both members to consume the first records", 20*time.Second, func() bool {
		return len(a.consumed())+len(b.consumed()) >= len(first)
	})
	ca, cb := a.consumed(), b.consumed()
	if len(ca) == 0 || len(cb) == 0 {
		failf("one member consumed nothing: a %d, b %d records", len(ca), len(cb))
	}
	sameRecs("records consumed by the group", append(ca, cb...), first)
	waitFor("the auto-commits (OffsetCommit v1) of the first records", 10*time.Second, func() bool {
		return committed(admin, groupID, topic, partitions, 10)
	})
	logf("first records consumed and committed")

	b.stop()
	logf("b left")
	waitFor("a to own all 3 partitions after b left", 20*time.Second, func() bool {
		return len(a.assigned()) == partitions
	})
	second := produce(producer, topic, "second", 5, partitions)
	waitFor("a to consume the second records", 20*time.Second, func() bool {
		return len(a.consumed()) >= len(ca)+len(second)
	})
	sameRecs("records a consumed after b left (from the commits, nothing again)", a.consumed()[len(ca):], second)
	waitFor("the auto-commits of the second records", 10*time.Second, func() bool {
		return committed(admin, groupID, topic, partitions, 15)
	})
	logf("second records consumed and committed")
	a.stop()
	waitFor("the group to be Empty after both left", 10*time.Second, func() bool {
		d := describeGroup(admin, groupID)
		return d.State == "Empty" && len(d.Members) == 0
	})
	check(admin.DeleteTopic(topic), "DeleteTopic")
}

func configEntry(admin sarama.ClusterAdmin, topic, name string) sarama.ConfigEntry {
	entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
	check(err, "DescribeConfig "+topic)
	for _, e := range entries {
		if e.Name == name {
			return e
		}
	}
	failf("DescribeConfig %s: no %s among %d entries", topic, name, len(entries))
	return sarama.ConfigEntry{}
}

func clusterAdmin(bootstrap string, admin sarama.ClusterAdmin, run string) {
	topic := "compat-sarama122-admin-" + run
	hour := "3600000"
	createTopic(admin, topic, 2, map[string]*string{"retention.ms": &hour})
	err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1}, false)
	if err != sarama.ErrTopicAlreadyExists {
		if te, ok := err.(*sarama.TopicError); !ok || te.Err != sarama.ErrTopicAlreadyExists {
			failf("creating %s twice: %v, want TOPIC_ALREADY_EXISTS", topic, err)
		}
	}

	// Sarama 1.22 asks with Metadata v0, which has no controller id: it reports -1 from any broker.
	brokers, _, err := admin.DescribeCluster()
	check(err, "DescribeCluster")
	if len(brokers) != 1 || brokers[0].Addr() != bootstrap {
		failf("DescribeCluster: %d brokers, want the one at %s", len(brokers), bootstrap)
	}
	meta, err := admin.DescribeTopics([]string{topic})
	check(err, "DescribeTopics")
	if len(meta) != 1 || meta[0].Err != sarama.ErrNoError || len(meta[0].Partitions) != 2 {
		failf("DescribeTopics: %+v", meta)
	}
	for _, p := range meta[0].Partitions {
		if p.Leader != brokers[0].ID() {
			failf("DescribeTopics: partition %d leader %d, want %d", p.ID, p.Leader, brokers[0].ID())
		}
	}

	// DescribeConfigs v0: the topic's own value is not a default, a broker default is.
	if e := configEntry(admin, topic, "retention.ms"); e.Value != hour || e.Default {
		failf("retention.ms of %s: %+v, want %s, not a default", topic, e, hour)
	}
	if e := configEntry(admin, topic, "max.message.bytes"); !e.Default {
		failf("max.message.bytes of %s: %+v, want a default", topic, e)
	}
	topics, err := admin.ListTopics()
	check(err, "ListTopics")
	if d, ok := topics[topic]; !ok || d.NumPartitions != 2 || len(d.ConfigEntries) != 1 ||
		d.ConfigEntries["retention.ms"] == nil || *d.ConfigEntries["retention.ms"] != hour {
		failf("ListTopics: %s is %+v (present %v), want 2 partitions and only retention.ms=%s", topic, d, ok,
			hour)
	}
	twoHours := "7200000"
	check(admin.AlterConfig(sarama.TopicResource, topic, map[string]*string{"retention.ms": &twoHours}, false),
		"AlterConfig")
	if e := configEntry(admin, topic, "retention.ms"); e.Value != twoHours || e.Default {
		failf("retention.ms after AlterConfig: %+v, want %s", e, twoHours)
	}

	check(admin.CreatePartitions(topic, 3, nil, false), "CreatePartitions")
	meta, err = admin.DescribeTopics([]string{topic})
	check(err, "DescribeTopics")
	if len(meta[0].Partitions) != 3 {
		failf("after CreatePartitions(3): %d partitions", len(meta[0].Partitions))
	}

	// 6 records in p0, then the records before offset 4 deleted: a consumer from the oldest
	// offset starts at 4.
	producer, err := sarama.NewSyncProducer([]string{bootstrap}, config())
	check(err, "NewSyncProducer")
	var msgs []*sarama.ProducerMessage
	for i := 0; i < 6; i++ {
		msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Partition: 0, Value: sarama.StringEncoder(fmt.Sprint(i))})
	}
	check(producer.SendMessages(msgs), "SendMessages")
	check(producer.Close(), "SyncProducer.Close")
	check(admin.DeleteRecords(topic, map[int32]int64{0: 4}), "DeleteRecords")
	client, err := sarama.NewClient([]string{bootstrap}, config())
	check(err, "NewClient")
	defer client.Close()
	oldest, err := client.GetOffset(topic, 0, sarama.OffsetOldest)
	check(err, "GetOffset oldest")
	newest, err := client.GetOffset(topic, 0, sarama.OffsetNewest)
	check(err, "GetOffset newest")
	if oldest != 4 || newest != 6 {
		failf("after DeleteRecords(p0 < 4): offsets %d..%d, want 4..6", oldest, newest)
	}

	// Offsets of a group without members, committed the way Sarama 1.22 commits (v1), listed.
	groupID := topic
	om, err := sarama.NewOffsetManagerFromClient(groupID, client)
	check(err, "NewOffsetManagerFromClient")
	pom, err := om.ManagePartition(topic, 0)
	check(err, "ManagePartition")
	pom.MarkOffset(5, "compat")
	check(pom.Close(), "PartitionOffsetManager.Close")
	check(om.Close(), "OffsetManager.Close")
	offsets, err := admin.ListConsumerGroupOffsets(groupID, map[string][]int32{topic: {0, 1}})
	check(err, "ListConsumerGroupOffsets")
	if b := offsets.GetBlock(topic, 0); b == nil || b.Err != sarama.ErrNoError || b.Offset != 5 || b.Metadata != "compat" {
		failf("ListConsumerGroupOffsets p0: %+v, want 5 \"compat\"", b)
	}
	if b := offsets.GetBlock(topic, 1); b == nil || b.Err != sarama.ErrNoError || b.Offset != -1 {
		failf("ListConsumerGroupOffsets p1: %+v, want none (-1)", b)
	}
	listed, err := admin.ListConsumerGroups()
	check(err, "ListConsumerGroups")
	if _, ok := listed[groupID]; !ok {
		failf("ListConsumerGroups: %s missing from %v", groupID, listed)
	}

	check(admin.DeleteTopic(topic), "DeleteTopic")
	waitFor("the deleted topic to disappear from DescribeTopics", 10*time.Second, func() bool {
		meta, err := admin.DescribeTopics([]string{topic})
		return err == nil && len(meta) == 1 && meta[0].Err == sarama.ErrUnknownTopicOrPartition
	})
	err = admin.DeleteTopic(topic)
	if !errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		failf("deleting %s twice: %v, want UNKNOWN_TOPIC_OR_PARTITION", topic, err)
	}
}
