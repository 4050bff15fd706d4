//! A program written for Redis, using the `redis` crate and nothing of
//! kvs: it runs unchanged against kvs and against a real Redis or Valkey
//! server. Give it the server's URL:
//!
//! ```sh
//! kvs jobs 2 2 /tmp/kvs-reg --resp-socket /tmp/kvs.sock &
//! cargo run --example redis_client -- redis+unix:///tmp/kvs.sock
//! cargo run --example redis_client -- redis://127.0.0.1:6379/
//! ```
//!
//! It prints what it did, one line per step; the output is the same for
//! both servers (the end-to-end tests compare them).

use redis::{Commands, RedisResult};
use std::time::Duration;

fn main() {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".into());
    if let Err(e) = run(&url) {
        eprintln!("redis_client: {url}: {e}");
        std::process::exit(1);
    }
}

fn run(url: &str) -> RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_connection()?;

    // Redis sends keyspace notifications only when asked; kvs always does
    // and accepts the setting.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("KEA")
        .exec(&mut con)?;

    let _: () = con.del(&["example:greeting", "example:a", "example:b"])?;

    // A second connection listens for changes to the example's keys.
    let mut listener = client.get_connection()?;
    let mut pubsub = listener.as_pubsub();
    pubsub.set_read_timeout(Some(Duration::from_secs(5)))?;
    pubsub.psubscribe("__keyspace@0__:example:*")?;

    let _: () = con.set("example:greeting", "hello")?;
    let greeting: String = con.get("example:greeting")?;
    println!("GET example:greeting -> {greeting}");

    let _: () = con.mset(&[("example:a", "1"), ("example:b", "2")])?;
    let values: Vec<Option<String>> = con.mget(&["example:a", "example:b", "example:none"])?;
    println!("MGET -> {values:?}");

    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.set(format!("example:p{i}"), i).ignore();
    }
    pipe.get("example:p99");
    let (last,): (String,) = pipe.query(&mut con)?;
    println!("pipeline of 101 commands, last GET -> {last}");

    let keys: Vec<String> = (0..100).map(|i| format!("example:p{i}")).collect();
    let removed: i64 = con.del(&keys)?;
    println!("DEL of the pipelined keys -> {removed}");

    let set_first: bool = con.set_nx("example:greeting", "again")?;
    println!("SETNX on an existing key -> {set_first}");

    // The first change after subscribing was the SET of example:greeting.
    let msg = pubsub.get_message()?;
    let event: String = msg.get_payload()?;
    println!("notified: {} on {}", event, msg.get_channel_name());
    println!("ok");
    Ok(())
}
