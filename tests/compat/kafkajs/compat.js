// kafkajs against sluice: create a topic, produce, list offsets (earliest, latest, by
// timestamp), delete the topic. Consuming (kafkajs consumers always use a group) is in groups.js.
//
// Usage: node compat.js BOOTSTRAP
'use strict';

const { Kafka, Partitioners, logLevel } = require('kafkajs');

const bootstrap = process.argv[2];
const topic = 'compat-kafkajs';
const partitions = 2;
const records = 100;

function fail(message) {
  console.error(`kafkajs: FAIL: ${message}`);
  process.exit(1);
}

async function main() {
  const kafka = new Kafka({
    clientId: 'sluice-compat',
    brokers: [bootstrap],
    logLevel: logLevel.WARN,
    connectionTimeout: 10000,
    requestTimeout: 30000,
    retry: { retries: 3 },
  });
  const admin = kafka.admin();
  await admin.connect();

  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: partitions, replicationFactor: 1 }],
    waitForLeaders: true,
  });
  if (!created) fail('createTopics returned false (topic already existed?)');
  const listed = await admin.listTopics();
  if (!listed.includes(topic)) fail('created topic not listed');

  const baseTs = Date.now() - 60000;
  const producer = kafka.producer({
    allowAutoTopicCreation: false,
    // Java-compatible murmur2 partitioning (the kafkajs 2.x default), named to avoid its warning.
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  await producer.connect();
  const messages = [];
  for (let i = 0; i < records; i++) {
    messages.push({
      key: `k${i}`,
      value: `v${i}`,
      partition: i % partitions,
      headers: { idx: String(i) },
      timestamp: String(baseTs + i),
    });
  }
  const acks = await producer.send({ topic, acks: -1, messages });
  if (acks.some((ack) => ack.errorCode !== 0)) fail(`produce acks: ${JSON.stringify(acks)}`);
  await producer.disconnect();

  const perPartition = records / partitions;
  const offsets = await admin.fetchTopicOffsets(topic);
  for (const p of offsets) {
    if (p.low !== '0' || p.high !== String(perPartition)) {
      fail(`offsets of partition ${p.partition}: ${JSON.stringify(p)}`);
    }
  }
  // Record 10 (partition 0, offset 5) has timestamp baseTs + 10.
  const byTime = await admin.fetchTopicOffsetsByTimestamp(topic, baseTs + 10);
  const p0 = byTime.find((p) => p.partition === 0);
  if (!p0 || p0.offset !== '5') fail(`offset by timestamp: ${JSON.stringify(byTime)}`);

  await admin.deleteTopics({ topics: [topic], timeout: 30000 });
  const deadline = Date.now() + 30000;
  while ((await admin.listTopics()).includes(topic)) {
    if (Date.now() > deadline) fail('deleted topic still listed');
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  await admin.disconnect();
  console.log('kafkajs: OK (create, produce, list offsets, delete; group consume: groups.js)');
}

main().catch((err) => fail(err && err.stack ? err.stack : String(err)));
