//! `HickoryResolver` (cargo feature `hickory`): async DNS that reports
//! record TTLs, which `CachingResolver` honours.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use hickory_resolver::config::{ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;

use crate::connect::{Resolve, ResolveFuture, ResolveTtlFuture};
use crate::error::Error;

/// DNS with [hickory](https://docs.rs/hickory-resolver) (feature
/// `hickory`): asynchronous lookups with no thread per query, hickory's
/// own record cache, and the records' TTLs reported through
/// [`Resolve::resolve_with_ttl`], so that wrapped in a
/// [`crate::CachingResolver`] connections follow DNS changes as fast as
/// the zone's TTL allows.
///
/// ```
/// use std::time::Duration;
/// use freshpool::{CachingResolver, Client, HickoryResolver};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let _ = || -> Result<(), freshpool::Error> {
/// let dns = HickoryResolver::from_system_conf()?;
/// let client = Client::builder()
///     .resolver(CachingResolver::new(dns).ttl(Duration::from_secs(60)))
///     .build()?;
/// # drop(client); Ok(()) };
/// # }
/// ```
pub struct HickoryResolver {
    resolver: TokioResolver,
}

impl std::fmt::Debug for HickoryResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HickoryResolver").finish_non_exhaustive()
    }
}

impl HickoryResolver {
    /// Reads the system's configuration (`/etc/resolv.conf`, hosts file).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// match freshpool::HickoryResolver::from_system_conf() {
    ///     Ok(dns) => drop(dns),
    ///     Err(e) => assert!(e.is_config()), // no usable resolv.conf
    /// }
    /// # }
    /// ```
    pub fn from_system_conf() -> Result<HickoryResolver, Error> {
        let builder = TokioResolver::builder_tokio().map_err(|e| {
            Error::config("reading the system DNS configuration failed").with_source(e)
        })?;
        Ok(HickoryResolver {
            resolver: builder.build(),
        })
    }

    /// Uses this name-server configuration and these options.
    ///
    /// ```
    /// use hickory_resolver::config::{ResolverConfig, ResolverOpts};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // No name servers: only IP literals, the hosts file and localhost.
    /// let dns = freshpool::HickoryResolver::with_config(ResolverConfig::new(), ResolverOpts::default());
    /// # drop(dns);
    /// # }
    /// ```
    pub fn with_config(config: ResolverConfig, options: ResolverOpts) -> HickoryResolver {
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(options)
                .build();
        HickoryResolver { resolver }
    }
}

impl Resolve for HickoryResolver {
    fn resolve(&self, host: &str, port: u16) -> ResolveFuture {
        let lookup = self.resolve_with_ttl(host, port);
        Box::pin(async move { lookup.await.map(|(addrs, _)| addrs) })
    }

    fn resolve_with_ttl(&self, host: &str, port: u16) -> ResolveTtlFuture {
        let resolver = self.resolver.clone();
        let host = host.to_owned();
        Box::pin(async move {
            let lookup = resolver
                .lookup_ip(host.as_str())
                .await
                .map_err(io::Error::other)?;
            let addrs: Vec<SocketAddr> =
                lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
            let ttl = lookup
                .valid_until()
                .saturating_duration_since(Instant::now());
            Ok((crate::connect::tcp::interleave_families(addrs), Some(ttl)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No name servers are configured, so nothing leaves the machine:
    /// IP literals and `localhost` resolve locally.
    #[tokio::test]
    async fn resolves_literals_and_localhost_without_network() {
        let dns = HickoryResolver::with_config(ResolverConfig::new(), ResolverOpts::default());
        let (addrs, ttl) = dns.resolve_with_ttl("127.0.0.1", 8080).await.unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert!(ttl.is_some());
        let addrs = dns.resolve("localhost", 80).await.unwrap();
        assert!(
            addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80),
            "{addrs:?}"
        );
        assert!(!addrs.is_empty());
    }
}
