//! Vetting a webhook URL when it is set: the URL policy, and for a host name every address it
//! resolves to now (the engine vets again at every attempt).

use zivio_core::url_policy::{Destination, UrlPolicy, WebhookUrl};

use crate::{Resolver, Services};

pub(crate) async fn vet_url(services: &Services, text: &str) -> Result<WebhookUrl, String> {
    vet(&services.url_policy, services.resolver.as_ref(), text).await
}

/// The URL policy, and for host names every address they resolve to now.
async fn vet(
    policy: &UrlPolicy,
    resolver: &dyn Resolver,
    text: &str,
) -> Result<WebhookUrl, String> {
    let url = policy.parse(text).map_err(|error| error.to_string())?;
    if let Ok(Destination::Name(host)) = url.destination() {
        let port = url.url().port_or_known_default().unwrap_or(443);
        let addresses = resolver.resolve(&host, port).await.unwrap_or_default();
        policy
            .vet(&host, &addresses)
            .map_err(|error| error.to_string())?;
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    /// Answers from a fixed table, as DNS would; unknown names do not resolve.
    struct Table(Vec<(&'static str, Vec<IpAddr>)>);

    #[async_trait::async_trait]
    impl Resolver for Table {
        async fn resolve(&self, host: &str, _: u16) -> std::io::Result<Vec<IpAddr>> {
            self.0
                .iter()
                .find(|(name, _)| *name == host)
                .map(|(_, addresses)| addresses.clone())
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "NXDOMAIN"))
        }
    }

    #[tokio::test]
    async fn host_names_are_vetted_on_every_resolved_address() {
        let resolver = Table(vec![
            ("public.example", vec!["93.184.216.34".parse().unwrap()]),
            (
                "mixed.example",
                vec![
                    "93.184.216.34".parse().unwrap(),
                    "10.0.0.7".parse().unwrap(),
                ],
            ),
            ("empty.example", vec![]),
        ]);
        let policy = UrlPolicy::default();
        assert!(
            vet(&policy, &resolver, "https://public.example/hook")
                .await
                .is_ok()
        );
        let mixed = vet(&policy, &resolver, "https://mixed.example/hook")
            .await
            .unwrap_err();
        assert!(
            mixed.contains("10.0.0.7") && mixed.contains("private"),
            "{mixed}"
        );
        let missing = vet(&policy, &resolver, "https://nowhere.example/")
            .await
            .unwrap_err();
        assert_eq!(missing, "nowhere.example resolves to no address");
        let empty = vet(&policy, &resolver, "https://empty.example/")
            .await
            .unwrap_err();
        assert_eq!(empty, "empty.example resolves to no address");
    }
}
