//! The payload preview (docs/product.md §4): what a webhook's owner would receive for an event
//! type, shaped with their access now. It shows the owner's data, so it sits behind the
//! privilege boundary.

use serde::Serialize;
use serde_json::Value;
use zivio_core::event::envelope;
use zivio_core::shaping::{ShapeProfile, shape};

use crate::caller::owner_access;
use crate::webhook_access::{find, require_cover};
use crate::{AppError, AppResult, Caller, FieldError, Services};

/// What a webhook's owner would receive for an event type: the catalog example, shaped.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Preview {
    pub event_type: String,
    /// The request body the receiver would get (with a placeholder event id), or null when
    /// the owner cannot read the collection at all.
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
    /// Why there is no payload, or what else decides delivery.
    pub note: String,
}

/// The payload preview; it shows the owner's data, so it sits behind the privilege boundary.
pub async fn preview(
    services: &Services,
    caller: &Caller,
    id: &str,
    event_type: Option<&str>,
) -> AppResult<Preview> {
    let parameter =
        |message: &str| AppError::InvalidParameter(FieldError::new("event_type", message));
    let event_type = event_type.ok_or_else(|| parameter("is required"))?;
    let example = services
        .catalog
        .event_type(event_type)
        .ok_or_else(|| parameter("is not an event type of the catalog"))?;
    let collection = services
        .catalog
        .collection_of_type(event_type)
        .expect("catalog types have a collection");
    let webhook = find(services, caller, id).await?;
    require_cover(services, caller, &webhook, "preview payloads of").await?;
    let (owner, active) = owner_access(services, &caller.tenant, &webhook.owner).await?;
    let owner = owner.as_if_active();
    if !owner.can_read_any(&collection.name) {
        return Ok(Preview {
            event_type: event_type.to_owned(),
            payload: None,
            note: format!(
                "The owner cannot read {}: this webhook receives no {} events.",
                collection.name, collection.name
            ),
        });
    }
    let profile = ShapeProfile::of(&owner, services.catalog, &collection.name);
    let data = shape(
        services.catalog,
        &collection.name,
        &example.example,
        &profile,
    );
    let body = envelope("evt_preview", event_type, services.now(), &data);
    let payload = serde_json::from_slice(&body).expect("an envelope is JSON");
    let note = if active {
        "Shaped with the owner's current access; whether a given resource is sent also depends on its placement and owners."
    } else {
        "The owner is inactive: nothing is sent until they are active again. Shaped with their roles."
    };
    Ok(Preview {
        event_type: event_type.to_owned(),
        payload: Some(payload),
        note: note.to_owned(),
    })
}
