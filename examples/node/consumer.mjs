// Consume hookrelay events: every new message from every vendor, with amqplib and the
// official CloudEvents SDK (structured mode: the whole event is the message body).
//
//   npm install
//   node consumer.mjs [QUEUE] [MAX_EVENTS]
//
// Environment: AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f) and
// HOOKRELAY_EXCHANGE (default hookrelay.events). QUEUE defaults to example.node;
// MAX_EVENTS (optional) stops after that many events.
import amqp from "amqplib";
import { HTTP } from "cloudevents";

const url = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672/%2f";
const exchange = process.env.HOOKRELAY_EXCHANGE ?? "hookrelay.events";
const queue = process.argv[2] ?? "example.node";
const maxEvents = process.argv[3] ? Number(process.argv[3]) : Infinity;

const connection = await amqp.connect(url);
const channel = await connection.createChannel();
// A durable queue keeps events while the consumer is down; the binding picks every
// vendor's new messages (routing key <vendor>.message.created).
await channel.assertQueue(queue, { durable: true });
await channel.bindQueue(queue, exchange, "*.message.created");
await channel.prefetch(20);
console.error(`consuming ${queue}`);

let seen = 0;
await channel.consume(queue, async (delivery) => {
  const event = HTTP.toEvent({
    headers: { "content-type": delivery.properties.contentType },
    body: delivery.content.toString("utf8"),
  });
  const msg = event.data.message;
  const who = msg.sender?.name ?? msg.sender?.id ?? "?";
  console.log(`${event.vendor}\t${who}\t${msg.text ?? ""}`);
  // Ack only once the event is handled: a crash before this redelivers it.
  channel.ack(delivery);
  if (++seen >= maxEvents) {
    await channel.close();
    await connection.close();
  }
});
