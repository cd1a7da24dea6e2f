"""Consume hookrelay events: every new message from every vendor, with pika and the
official CloudEvents SDK (its RabbitMQ binding reads hookrelay's structured messages).

  pip install -r requirements.txt
  python consumer.py [QUEUE] [MAX_EVENTS]

Environment: AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f) and
HOOKRELAY_EXCHANGE (default hookrelay.events). QUEUE defaults to example.python;
MAX_EVENTS (optional) stops after that many events.
"""

import os
import sys

import pika
from cloudevents.core.bindings import rabbitmq

url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
exchange = os.environ.get("HOOKRELAY_EXCHANGE", "hookrelay.events")
queue = sys.argv[1] if len(sys.argv) > 1 else "example.python"
max_events = int(sys.argv[2]) if len(sys.argv) > 2 else None

channel = pika.BlockingConnection(pika.URLParameters(url)).channel()
# A durable queue keeps events while the consumer is down; the binding picks every
# vendor's new messages (routing key <vendor>.message.created).
channel.queue_declare(queue=queue, durable=True)
channel.queue_bind(queue=queue, exchange=exchange, routing_key="*.message.created")
channel.basic_qos(prefetch_count=20)
print(f"consuming {queue}", file=sys.stderr, flush=True)
seen = 0


def on_message(ch, method, props, body):
    global seen
    message = rabbitmq.RabbitMQMessage(headers={}, content_type=props.content_type, body=body)
    event = rabbitmq.from_rabbitmq_event(message)
    msg = event.get_data()["message"]
    sender = msg.get("sender") or {}
    who = sender.get("name") or sender.get("id") or "?"
    print(f"{event.get_extension('vendor')}\t{who}\t{msg.get('text', '')}", flush=True)
    # Ack only once the event is handled: a crash before this redelivers it.
    ch.basic_ack(method.delivery_tag)
    seen += 1
    if max_events is not None and seen >= max_events:
        ch.stop_consuming()


channel.basic_consume(queue=queue, on_message_callback=on_message)
channel.start_consuming()
