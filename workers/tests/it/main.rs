//! Integration tests of hookrelay-worker against the real RabbitMQ on 127.0.0.1:5672.
//! Every test has its own exchange and queues, so they run in parallel.

mod archive;
mod forward;
mod helpers;
mod history;
mod reconnect;
mod replay;
mod shutdown;
mod sink;
mod tail;
