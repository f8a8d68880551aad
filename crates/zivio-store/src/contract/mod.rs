//! What the app may ask of a store, by area. [`crate::Store`] is all of them together; a caller
//! imports the area traits whose methods it calls.

mod access;
mod directory;
mod events;
mod history;
mod queue;
mod recoveries;
mod upkeep;
mod webhooks;

pub use access::AccessStore;
pub use directory::DirectoryStore;
pub use events::EventStore;
pub use history::HistoryStore;
pub use queue::QueueStore;
pub use recoveries::RecoveryStore;
pub use upkeep::UpkeepStore;
pub use webhooks::WebhookStore;
