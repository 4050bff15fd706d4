//! etcd, the engine under a dataset shared by kvs nodes on many machines
//! (`--store etcd://...`): a client of etcd's v3 API through its JSON
//! gateway, over a small blocking HTTP/1.1 client. Chosen over the
//! `etcd-client` crate (tonic and tokio, whose build needs `protoc`): it
//! builds with the Rust toolchain alone, needs no async runtime beside the
//! mio reactor, and each call is a blocking request on the thread that
//! makes it (a store pool thread or the watch thread).

mod client;
mod group;
mod http;
mod mirror;

pub use client::{
    prefix_end, Compare, Etcd, EtcdError, Event, Kv, Op, OpResult, TxnResult, Watch, WatchMessage,
};
pub use http::HttpError;
pub use mirror::{Mirror, TXN_OPS};

/// `--store etcd://host:port[,host:port...]` and `--store-prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    pub endpoints: Vec<String>,
    /// What every key of this dataset starts with in etcd, so that
    /// several datasets can share a cluster.
    pub prefix: Vec<u8>,
    /// `--store-reads linearizable`: each read waits for every change
    /// etcd had made when the read came (see [`Mirror`]).
    pub linearizable: bool,
}

/// The prefix when `--store-prefix` is not given.
pub const DEFAULT_PREFIX: &str = "kvs/";

impl EtcdOptions {
    /// Parses `etcd://host:port[,host:port...]`.
    pub fn parse(url: &str, prefix: Option<&str>) -> Result<EtcdOptions, String> {
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("--store: '{url}' is not etcd://host:port[,host:port...]"))?;
        let endpoints: Vec<String> = rest
            .trim_end_matches('/')
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect();
        if endpoints.is_empty() {
            return Err(format!("--store: '{url}' names no etcd member"));
        }
        for e in &endpoints {
            let port = e.rsplit_once(':').and_then(|(h, p)| {
                (!h.is_empty()).then_some(())?;
                p.parse::<u16>().ok().filter(|p| *p > 0)
            });
            if port.is_none() {
                return Err(format!("--store: '{e}' is not host:port"));
            }
        }
        let prefix = prefix.unwrap_or(DEFAULT_PREFIX);
        if prefix.is_empty() {
            return Err("--store-prefix: empty (it keeps this dataset apart from others)".into());
        }
        Ok(EtcdOptions {
            endpoints,
            prefix: prefix.as_bytes().to_vec(),
            linearizable: false,
        })
    }

    /// `--store-reads`: whether reads are linearizable.
    pub fn parse_reads(value: &str) -> Result<bool, String> {
        match value {
            "cache" => Ok(false),
            "linearizable" => Ok(true),
            _ => Err(format!(
                "--store-reads: '{value}' is not one of cache, linearizable"
            )),
        }
    }

    /// Connects, checks the cluster, loads the dataset into `store` and
    /// makes `store` its cache (see [`Mirror`]).
    pub fn attach(
        &self,
        store: &std::sync::Arc<crate::store::Store>,
    ) -> Result<std::sync::Arc<Mirror>, String> {
        let etcd = Etcd::new(self.endpoints.clone(), std::time::Duration::from_secs(2));
        let mirror = Mirror::start(etcd, &self.prefix, store.clone(), self.linearizable)?;
        let remote: std::sync::Arc<dyn crate::store::remote::Remote> = mirror.clone();
        store
            .set_remote(remote)
            .map_err(|_| "the store already caches a dataset".to_string())?;
        Ok(mirror)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_or_say_why_not() {
        let o = EtcdOptions::parse("etcd://127.0.0.1:2379,h2:2380", None).unwrap();
        assert_eq!(o.endpoints, ["127.0.0.1:2379", "h2:2380"]);
        assert_eq!(o.prefix, b"kvs/");
        assert_eq!(
            EtcdOptions::parse("etcd://a:1", Some("team/"))
                .unwrap()
                .prefix,
            b"team/"
        );
        for bad in [
            "redis://a:1",
            "etcd://",
            "etcd://a",
            "etcd://a:0",
            "etcd://:5",
        ] {
            assert!(EtcdOptions::parse(bad, None).is_err(), "{bad}");
        }
        assert!(EtcdOptions::parse("etcd://a:1", Some("")).is_err());
    }
}
