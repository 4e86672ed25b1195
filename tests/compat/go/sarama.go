package main

// IBM Sarama (github.com/IBM/sarama) against Sluice, at the protocol versions that matter to its
// users: V2_2_0_0 (what Sarama 1.22 used when its consumer group broke against Sluice), Sarama's
// default (V2_8_0_0) and V4_0_0_0. At each version:
//   - an idempotent acks=all SyncProducer with every codec the version allows, read back by a
//     PartitionConsumer with exact offsets, keys, values, headers and timestamps;
//   - a ConsumerGroup of two members on a 3-partition topic consuming records produced after the
//     group is stable, each record once, committed; after one member leaves, the other resumes from
//     the commits;
// and once, at the newest version, ClusterAdmin: topics (create/list/describe/delete), configs
// (describe, alter, incremental alter), partitions, offsets, records deletion, consumer groups
// (list, describe, offsets, delete).
//
// Why Sarama 1.22 failed and 1.61 at the same V2_2_0_0 did not: 1.22 commits offsets with
// OffsetCommit v1 (v2 only when Consumer.Offsets.Retention is set), which Kafka 4.x no longer serves
// and Sluice did not either; its consumer group reported the undecodable UNSUPPORTED_VERSION answer
// as "insufficient data to decode packet". 1.61 sends OffsetCommit v6 at V2_2_0_0. Sluice now serves
// v1; Sarama 1.22.1 itself is tested by ../sarama122.

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

var saramaVersions = []sarama.KafkaVersion{sarama.V2_2_0_0, sarama.DefaultVersion, sarama.V4_0_0_0}

func saramaConfig(version sarama.KafkaVersion) *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Version = version
	cfg.ClientID = "sluice-compat-sarama"
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
	cfg.Consumer.Offsets.AutoCommit.Enable = false
	cfg.Consumer.Group.Session.Timeout = 10 * time.Second
	cfg.Consumer.Group.Heartbeat.Interval = 300 * time.Millisecond
	cfg.Admin.Timeout = 10 * time.Second
	return cfg
}

func runSarama(bootstrap string) {
	c := newChecker("sarama")
	if os.Getenv("SARAMA_LOG") == "1" {
		sarama.Logger = log.New(os.Stderr, "sarama log: ", log.Lmicroseconds)
	}
	ctx, cancel := context.WithDeadline(context.Background(), c.deadline)
	defer cancel()
	run := runID()
	newest := saramaVersions[len(saramaVersions)-1]
	admin, err := sarama.NewClusterAdmin([]string{bootstrap}, saramaConfig(newest))
	c.check(err, "NewClusterAdmin")
	defer admin.Close()

	for _, v := range saramaVersions {
		c.name = "sarama " + v.String()
		saramaProduceRead(c, bootstrap, admin, v, run)
		c.logf("produce/read-back OK")
		saramaGroups(ctx, c, bootstrap, admin, v, run)
		c.logf("consumer group OK")
	}
	c.name = "sarama " + newest.String()
	saramaAdmin(c, bootstrap, admin, newest, run)
	c.logf("cluster admin OK")
	fmt.Printf("sarama: OK (%.1fs)\n", time.Since(c.started).Seconds())
}

func saramaCreateTopic(c *checker, admin sarama.ClusterAdmin, topic string, partitions int32,
	configs map[string]*string) {
	err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1,
		ConfigEntries: configs}, false)
	c.check(err, "CreateTopic "+topic)
}

func headerValue(hs []*sarama.RecordHeader, key string) string {
	for _, h := range hs {
		if string(h.Key) == key {
			return string(h.Value)
		}
	}
	return ""
}

func saramaProduceRead(c *checker, bootstrap string, admin sarama.ClusterAdmin, v sarama.KafkaVersion, run string) {
	topic := fmt.Sprintf("compat-sarama-produce-%s-%s", v, run)
	saramaCreateTopic(c, admin, topic, 2, nil)
	codecs := []sarama.CompressionCodec{sarama.CompressionNone, sarama.CompressionGZIP,
		sarama.CompressionSnappy, sarama.CompressionLZ4}
	if v.IsAtLeast(sarama.V2_1_0_0) {
		codecs = append(codecs, sarama.CompressionZSTD)
	}
	const perCodec = 20
	base := time.Now().Add(-time.Hour).UnixMilli()
	var want []rec
	next := map[int32]int64{}
	for ci, codec := range codecs {
		cfg := saramaConfig(v)
		cfg.Producer.Compression = codec
		producer, err := sarama.NewSyncProducer([]string{bootstrap}, cfg)
		c.check(err, "NewSyncProducer "+codec.String())
		var msgs []*sarama.ProducerMessage
		for i := 0; i < perCodec; i++ {
			n := ci*perCodec + i
			msgs = append(msgs, &sarama.ProducerMessage{
				Topic:     topic,
				Partition: int32(n % 2),
				Key:       sarama.StringEncoder(fmt.Sprintf("key-%s-%d", codec, i)),
				Value:     sarama.StringEncoder(fmt.Sprintf("value-%s-%d-%0100d", codec, i, n)),
				Headers: []sarama.RecordHeader{{Key: []byte("codec"), Value: []byte(codec.String())},
					{Key: []byte("n"), Value: []byte(fmt.Sprint(n))}},
				Timestamp: time.UnixMilli(base + int64(n)),
			})
		}
		c.check(producer.SendMessages(msgs), "SendMessages "+codec.String())
		for _, m := range msgs {
			if m.Offset != next[m.Partition] {
				c.failf("%s: message %v acknowledged at p%d@%d, want offset %d", codec, m.Key, m.Partition,
					m.Offset, next[m.Partition])
			}
			next[m.Partition]++
			key, _ := m.Key.Encode()
			value, _ := m.Value.Encode()
			want = append(want, rec{m.Partition, m.Offset, string(key), string(value)})
		}
		c.check(producer.Close(), "SyncProducer.Close")
	}

	consumer, err := sarama.NewConsumer([]string{bootstrap}, saramaConfig(v))
	c.check(err, "NewConsumer")
	defer consumer.Close()
	var got []rec
	timeout := time.After(20 * time.Second)
	for p := int32(0); p < 2; p++ {
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		c.check(err, fmt.Sprintf("ConsumePartition %d", p))
		for read := int64(0); read < next[p]; read++ {
			select {
			case m := <-pc.Messages():
				got = append(got, rec{m.Partition, m.Offset, string(m.Key), string(m.Value)})
				var n int64
				if _, err := fmt.Sscan(headerValue(m.Headers, "n"), &n); err != nil || len(m.Headers) != 2 {
					c.failf("p%d@%d: headers %v", m.Partition, m.Offset, m.Headers)
				}
				if m.Timestamp.UnixMilli() != base+n {
					c.failf("p%d@%d: timestamp %d, want %d", m.Partition, m.Offset, m.Timestamp.UnixMilli(), base+n)
				}
			case err := <-pc.Errors():
				c.failf("PartitionConsumer p%d: %v", p, err)
			case <-timeout:
				c.failf("read back: %d of %d records in 20 s", len(got), len(want))
			}
		}
		c.check(pc.Close(), "PartitionConsumer.Close")
	}
	c.sameRecs("read back", got, want)
	c.check(admin.DeleteTopic(topic), "DeleteTopic")
}

// saramaMember is one ConsumerGroup member of the group test.
type saramaMember struct {
	name  string
	group sarama.ConsumerGroup
	mu    sync.Mutex
	owned []int32
	seen  []rec
	done  chan struct{}
	c     *checker
}

func (m *saramaMember) Setup(s sarama.ConsumerGroupSession) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.owned = nil
	for _, ps := range s.Claims() {
		m.owned = append(m.owned, ps...)
	}
	return nil
}

func (m *saramaMember) Cleanup(sarama.ConsumerGroupSession) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.owned = nil
	return nil
}

func (m *saramaMember) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case msg, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			// This message and whatever else is already buffered, committed (synchronously) before
			// they count as consumed: a record in `seen` is a committed one.
			batch := []*sarama.ConsumerMessage{msg}
		more:
			for {
				select {
				case next, ok := <-claim.Messages():
					if !ok {
						break more
					}
					batch = append(batch, next)
				default:
					break more
				}
			}
			for _, msg := range batch {
				s.MarkMessage(msg, "")
			}
			s.Commit()
			m.mu.Lock()
			for _, msg := range batch {
				m.seen = append(m.seen, rec{msg.Partition, msg.Offset, string(msg.Key), string(msg.Value)})
			}
			m.mu.Unlock()
		case <-s.Context().Done():
			return nil
		}
	}
}

func (m *saramaMember) assigned() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]int32(nil), m.owned...)
}

func (m *saramaMember) consumed() []rec {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]rec(nil), m.seen...)
}

func startSaramaMember(ctx context.Context, c *checker, bootstrap, groupID, topic, name string,
	v sarama.KafkaVersion) *saramaMember {
	cfg := saramaConfig(v)
	cfg.ClientID = "sluice-compat-sarama-" + name
	group, err := sarama.NewConsumerGroup([]string{bootstrap}, groupID, cfg)
	c.check(err, "NewConsumerGroup "+name)
	m := &saramaMember{name: name, group: group, done: make(chan struct{}), c: c}
	go func() {
		for err := range group.Errors() {
			c.failf("member %s: %v", name, err)
		}
	}()
	go func() {
		defer close(m.done)
		for {
			err := group.Consume(ctx, []string{topic}, m)
			if errors.Is(err, sarama.ErrClosedConsumerGroup) || ctx.Err() != nil {
				return
			}
			if err != nil {
				c.failf("member %s: Consume: %v", name, err)
			}
		}
	}()
	return m
}

func (m *saramaMember) stop() {
	m.c.check(m.group.Close(), "ConsumerGroup.Close "+m.name) // leaves the group; auto-commit is off
	<-m.done
}

func saramaProduce(c *checker, producer sarama.SyncProducer, topic, prefix string, perPartition,
	partitions int) []rec {
	var msgs []*sarama.ProducerMessage
	for i := 0; i < perPartition*partitions; i++ {
		msgs = append(msgs, &sarama.ProducerMessage{
			Topic:     topic,
			Partition: int32(i % partitions),
			Key:       sarama.StringEncoder(fmt.Sprintf("%s-%d", prefix, i)),
			Value:     sarama.StringEncoder(fmt.Sprintf("%s-value-%d", prefix, i)),
		})
	}
	c.check(producer.SendMessages(msgs), "SendMessages "+prefix)
	var out []rec
	for i, m := range msgs {
		out = append(out, rec{m.Partition, m.Offset, fmt.Sprintf("%s-%d", prefix, i),
			fmt.Sprintf("%s-value-%d", prefix, i)})
	}
	return out
}

func describeGroup(c *checker, admin sarama.ClusterAdmin, group string) *sarama.GroupDescription {
	described, err := admin.DescribeConsumerGroups([]string{group})
	c.check(err, "DescribeConsumerGroups")
	if len(described) != 1 || described[0].GroupId != group {
		c.failf("DescribeConsumerGroups(%s): %d groups", group, len(described))
	}
	if described[0].Err != sarama.ErrNoError {
		c.failf("DescribeConsumerGroups(%s): %v", group, described[0].Err)
	}
	return described[0]
}

func saramaGroups(ctx context.Context, c *checker, bootstrap string, admin sarama.ClusterAdmin,
	v sarama.KafkaVersion, run string) {
	topic := fmt.Sprintf("compat-sarama-group-%s-%s", v, run)
	groupID := topic
	const partitions = 3
	saramaCreateTopic(c, admin, topic, partitions, nil)
	producer, err := sarama.NewSyncProducer([]string{bootstrap}, saramaConfig(v))
	c.check(err, "NewSyncProducer")
	defer producer.Close()

	a := startSaramaMember(ctx, c, bootstrap, groupID, topic, "a", v)
	b := startSaramaMember(ctx, c, bootstrap, groupID, topic, "b", v)
	c.waitFor("a stable group of two members owning the 3 partitions", 30*time.Second, func() bool {
		pa, pb := a.assigned(), b.assigned()
		if len(pa) == 0 || len(pb) == 0 || len(pa)+len(pb) != partitions {
			return false
		}
		d := describeGroup(c, admin, groupID)
		return d.State == "Stable" && len(d.Members) == 2
	})
	d := describeGroup(c, admin, groupID)
	if d.ProtocolType != "consumer" || d.Protocol != "range" {
		c.failf("DescribeConsumerGroups: protocol type %q protocol %q, want consumer / range", d.ProtocolType,
			d.Protocol)
	}
	owned := 0
	for id, member := range d.Members {
		assignment, err := member.GetMemberAssignment()
		c.check(err, "member assignment of "+id)
		owned += len(assignment.Topics[topic])
	}
	if owned != partitions {
		c.failf("DescribeConsumerGroups: %d partitions assigned, want %d", owned, partitions)
	}
	groups, err := admin.ListConsumerGroups()
	c.check(err, "ListConsumerGroups")
	if groups[groupID] != "consumer" {
		c.failf("ListConsumerGroups: %s has protocol type %q, want consumer", groupID, groups[groupID])
	}
	c.logf("group stable: a owns %v, b owns %v", a.assigned(), b.assigned())

	// Produced only now, with the group stable (the case that broke Sarama 1.22).
	first := saramaProduce(c, producer, topic, "first", 10, partitions)
	c.waitFor("both members to consume the first records", 20*time.Second, func() bool {
		return len(a.consumed())+len(b.consumed()) >= len(first)
	})
	ca, cb := a.consumed(), b.consumed()
	if len(ca) == 0 || len(cb) == 0 {
		c.failf("one member consumed nothing: a %d, b %d records", len(ca), len(cb))
	}
	c.sameRecs("records consumed by the group", append(ca, cb...), first)

	c.logf("first records consumed")
	b.stop()
	c.logf("b left")
	c.waitFor("a to own all 3 partitions after b left", 20*time.Second, func() bool {
		return len(a.assigned()) == partitions
	})
	c.logf("a owns all 3 partitions")
	second := saramaProduce(c, producer, topic, "second", 5, partitions)
	c.waitFor("a to consume the second records", 20*time.Second, func() bool {
		return len(a.consumed()) >= len(ca)+len(second)
	})
	c.sameRecs("records a consumed after b left", a.consumed()[len(ca):], second)

	offsets, err := admin.ListConsumerGroupOffsets(groupID, map[string][]int32{topic: {0, 1, 2}})
	c.check(err, "ListConsumerGroupOffsets")
	for p := int32(0); p < partitions; p++ {
		if block := offsets.GetBlock(topic, p); block == nil || block.Err != sarama.ErrNoError || block.Offset != 15 {
			c.failf("committed offset of p%d: %+v, want 15", p, block)
		}
	}
	c.logf("second records consumed")
	a.stop()
	c.logf("a left")
	c.waitFor("the group to be Empty after both left", 10*time.Second, func() bool {
		d := describeGroup(c, admin, groupID)
		return d.State == "Empty" && len(d.Members) == 0
	})
	c.check(admin.DeleteConsumerGroup(groupID), "DeleteConsumerGroup")
	c.check(admin.DeleteTopic(topic), "DeleteTopic")
}

func saramaConfigEntry(c *checker, admin sarama.ClusterAdmin, topic, name string) sarama.ConfigEntry {
	entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
	c.check(err, "DescribeConfig "+topic)
	for _, e := range entries {
		if e.Name == name {
			return e
		}
	}
	c.failf("DescribeConfig %s: no %s among %d entries", topic, name, len(entries))
	return sarama.ConfigEntry{}
}

func expectSaramaConfig(c *checker, admin sarama.ClusterAdmin, topic, name, value string, source sarama.ConfigSource) {
	e := saramaConfigEntry(c, admin, topic, name)
	if e.Value != value || e.Source != source {
		c.failf("config %s of %s = %q (source %v), want %q (source %v)", name, topic, e.Value, e.Source, value, source)
	}
}

func saramaAdmin(c *checker, bootstrap string, admin sarama.ClusterAdmin, v sarama.KafkaVersion, run string) {
	topic := fmt.Sprintf("compat-sarama-admin-%s", run)
	groupID := topic
	hour := "3600000"
	saramaCreateTopic(c, admin, topic, 2, map[string]*string{"retention.ms": &hour})
	err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1}, false)
	if !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		c.failf("creating %s twice: %v, want TOPIC_ALREADY_EXISTS", topic, err)
	}

	brokers, controller, err := admin.DescribeCluster()
	c.check(err, "DescribeCluster")
	if len(brokers) == 0 || controller < 0 {
		c.failf("DescribeCluster: %d brokers, controller %d", len(brokers), controller)
	}
	topics, err := admin.ListTopics()
	c.check(err, "ListTopics")
	if d, ok := topics[topic]; !ok || d.NumPartitions != 2 || d.ConfigEntries["retention.ms"] == nil ||
		*d.ConfigEntries["retention.ms"] != hour {
		c.failf("ListTopics: %s is %+v (present %v), want 2 partitions and retention.ms=%s", topic, d, ok, hour)
	}
	meta, err := admin.DescribeTopics([]string{topic})
	c.check(err, "DescribeTopics")
	if len(meta) != 1 || meta[0].Err != sarama.ErrNoError || len(meta[0].Partitions) != 2 {
		c.failf("DescribeTopics: %+v", meta)
	}
	for _, p := range meta[0].Partitions {
		if p.Leader != brokers[0].ID() {
			c.failf("DescribeTopics: partition %d leader %d, want %d", p.ID, p.Leader, brokers[0].ID())
		}
	}

	expectSaramaConfig(c, admin, topic, "retention.ms", hour, sarama.SourceTopic)
	twoHours := "7200000"
	c.check(admin.AlterConfig(sarama.TopicResource, topic, map[string]*string{"retention.ms": &twoHours}, false),
		"AlterConfig")
	expectSaramaConfig(c, admin, topic, "retention.ms", twoHours, sarama.SourceTopic)
	bigger := "2000000"
	c.check(admin.IncrementalAlterConfig(sarama.TopicResource, topic, map[string]sarama.IncrementalAlterConfigsEntry{
		"max.message.bytes": {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: &bigger},
		"retention.ms":      {Operation: sarama.IncrementalAlterConfigsOperationDelete},
	}, false), "IncrementalAlterConfig")
	expectSaramaConfig(c, admin, topic, "max.message.bytes", bigger, sarama.SourceTopic)
	if e := saramaConfigEntry(c, admin, topic, "retention.ms"); e.Source == sarama.SourceTopic || e.Value != "604800000" {
		c.failf("retention.ms after its deletion: %q (source %v), want the default 604800000", e.Value, e.Source)
	}

	c.check(admin.CreatePartitions(topic, 3, nil, false), "CreatePartitions")
	meta, err = admin.DescribeTopics([]string{topic})
	c.check(err, "DescribeTopics")
	if len(meta[0].Partitions) != 3 {
		c.failf("after CreatePartitions(3): %d partitions", len(meta[0].Partitions))
	}

	// 6 records in p0, 3 in p1, none in p2; then records before offset 4 of p0 deleted.
	producer, err := sarama.NewSyncProducer([]string{bootstrap}, saramaConfig(v))
	c.check(err, "NewSyncProducer")
	var msgs []*sarama.ProducerMessage
	for i, p := range []int32{0, 0, 0, 0, 0, 0, 1, 1, 1} {
		msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Partition: p, Value: sarama.StringEncoder(fmt.Sprint(i))})
	}
	c.check(producer.SendMessages(msgs), "SendMessages")
	c.check(producer.Close(), "SyncProducer.Close")
	expectOffsets := func(what string, at int64, want []int64) {
		req := map[string]map[int32]int64{topic: {}}
		for p := range want {
			req[topic][int32(p)] = at
		}
		got, err := admin.ListOffsets(req, nil)
		c.check(err, what)
		for p, w := range want {
			r := got[topic][int32(p)]
			if r == nil || (r.Err != nil && !errors.Is(r.Err, sarama.ErrNoError)) || r.Offset != w {
				c.failf("%s p%d: %+v, want %d", what, p, r, w)
			}
		}
	}
	expectOffsets("ListOffsets earliest", sarama.OffsetOldest, []int64{0, 0, 0})
	expectOffsets("ListOffsets latest", sarama.OffsetNewest, []int64{6, 3, 0})
	c.check(admin.DeleteRecords(topic, map[int32]int64{0: 4}), "DeleteRecords")
	expectOffsets("ListOffsets earliest after DeleteRecords", sarama.OffsetOldest, []int64{4, 0, 0})

	// Offsets of a group without members: commit, list, delete one, delete the group.
	_, err = admin.AlterConsumerGroupOffsets(groupID, map[string]map[int32]sarama.OffsetAndMetadata{topic: {
		0: {Offset: 5, Metadata: "compat", LeaderEpoch: -1},
		1: {Offset: 2, LeaderEpoch: -1},
	}}, nil)
	c.check(err, "AlterConsumerGroupOffsets")
	offsets, err := admin.ListConsumerGroupOffsets(groupID, map[string][]int32{topic: {0, 1, 2}})
	c.check(err, "ListConsumerGroupOffsets")
	for p, want := range map[int32]int64{0: 5, 1: 2, 2: -1} {
		if b := offsets.GetBlock(topic, p); b == nil || b.Err != sarama.ErrNoError || b.Offset != want {
			c.failf("ListConsumerGroupOffsets p%d: %+v, want %d", p, b, want)
		}
	}
	if b := offsets.GetBlock(topic, 0); b.Metadata != "compat" {
		c.failf("ListConsumerGroupOffsets p0 metadata %q, want \"compat\"", b.Metadata)
	}
	groups, err := admin.ListConsumerGroups()
	c.check(err, "ListConsumerGroups")
	if _, ok := groups[groupID]; !ok {
		c.failf("ListConsumerGroups: %s missing from %v", groupID, groups)
	}
	if d := describeGroup(c, admin, groupID); d.State != "Empty" || len(d.Members) != 0 {
		c.failf("DescribeConsumerGroups %s: state %q, %d members; want Empty without members", groupID, d.State,
			len(d.Members))
	}
	c.check(admin.DeleteConsumerGroupOffset(groupID, topic, 1), "DeleteConsumerGroupOffset")
	offsets, err = admin.ListConsumerGroupOffsets(groupID, map[string][]int32{topic: {0, 1}})
	c.check(err, "ListConsumerGroupOffsets")
	if b := offsets.GetBlock(topic, 1); b == nil || b.Offset != -1 {
		c.failf("p1 after DeleteConsumerGroupOffset: %+v, want no offset", b)
	}
	if b := offsets.GetBlock(topic, 0); b == nil || b.Offset != 5 {
		c.failf("p0 after deleting p1's offset: %+v, want 5", b)
	}
	c.check(admin.DeleteConsumerGroup(groupID), "DeleteConsumerGroup")
	groups, err = admin.ListConsumerGroups()
	c.check(err, "ListConsumerGroups")
	if _, ok := groups[groupID]; ok {
		c.failf("ListConsumerGroups: %s still listed after DeleteConsumerGroup", groupID)
	}

	c.check(admin.DeleteTopic(topic), "DeleteTopic")
	c.waitFor("the deleted topic to disappear from ListTopics", 10*time.Second, func() bool {
		topics, err := admin.ListTopics()
		_, present := topics[topic]
		return err == nil && !present
	})
	if err := admin.DeleteTopic(topic); !errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		c.failf("deleting %s twice: %v, want UNKNOWN_TOPIC_OR_PARTITION", topic, err)
	}
}
