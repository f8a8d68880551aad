//! Webhook URLs as admins type them: parsing and vetting never panic, and an accepted URL is
//! HTTPS (or HTTP where allowed) to a host that can be masked and displayed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zivio_core::url_policy::UrlPolicy;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for allow_http in [false, true] {
        let policy = UrlPolicy {
            allow_http,
            allowed_private: Vec::new(),
        };
        if let Ok(url) = policy.parse(&text) {
            let scheme = url.url().scheme();
            assert!(scheme == "https" || (allow_http && scheme == "http"));
            let _ = url.destination();
            let _ = url.masked();
            assert!(!url.host().is_empty());
        }
    }
    let _ = zivio_core::url_policy::mask_str(&text);
});
