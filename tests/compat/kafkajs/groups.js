// kafkajs consumer groups against sluice: two consumers join one group (whoever owns a partition
// processes it) and every record is processed exactly once; the admin client lists and describes
// the group (both members present) and fetches its
// committed offsets; after the members disconnect the group is deleted.
//
// Usage: node groups.js BOOTSTRAP
'use strict';

const { Kafka, Partitioners, logLevel } = require('kafkajs');

const bootstrap = process.argv[2];
// Unique per run, so a rerun against the same broker starts clean.
const run = Date.now();
const topic = `compat-groups-kafkajs-${run}`;
const groupId = `compat-kafkajs-group-${run}`;
const partitions = 4;
const records = 200;
const timeoutMs = 60000;

function fail(message) {
  console.error(`kafkajs groups: FAIL: ${message}`);
  process.exit(1);
}

async function waitFor(what, check) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  fail(`timed out waiting for ${what}`);
}

async function main() {
  const kafka = new Kafka({
    clientId: 'sluice-compat-groups',
    brokers: [bootstrap],
    logLevel: logLevel.WARN,
    connectionTimeout: 10000,
    requestTimeout: 30000,
  });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: partitions }] });
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  const messages = [];
  for (let i = 0; i < records; i++) {
    messages.push({ value: `r${i}`, partition: i % partitions });
  }
  await producer.send({ topic, acks: -1, messages });

  const seen = [];
  const consumers = [];
  for (const name of ['a', 'b']) {
    const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 500 });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        seen.push([name, message.value.toString()]);
      },
    });
    consumers.push(consumer);
  }
  await waitFor('every record', async () => new Set(seen.map(([, v]) => v)).size >= records);

  const listed = await admin.listGroups();
  if (!listed.groups.some((g) => g.groupId === groupId)) {
    fail(`${groupId} not listed: ${JSON.stringify(listed.groups)}`);
  }
  await waitFor('two members in the described group', async () => {
    const described = await admin.describeGroups([groupId]);
    return described.groups[0].members.length === 2;
  });
  const values = seen.map(([, v]) => v);
  if (values.length !== records) {
    fail(`${values.length} records processed for ${records} produced (duplicates?)`);
  }
  // kafkajs commits after processing (autoCommit); wait for the offsets to cover everything.
  await waitFor('committed offsets', async () => {
    const offsets = await admin.fetchOffsets({ groupId, topics: [topic] });
    const total = offsets[0].partitions.reduce((sum, p) => sum + Number(p.offset), 0);
    return total === records;
  });

  for (const consumer of consumers) {
    await consumer.disconnect();
  }
  await admin.deleteGroups([groupId]);
  await admin.deleteTopics({ topics: [topic] });
  await producer.disconnect();
  await admin.disconnect();
  console.log(`kafkajs groups: OK (${records} records, members ${[...new Set(seen.map(([n]) => n))]})`);
}

main().catch((error) => fail(error.stack || String(error)));
