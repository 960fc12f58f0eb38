//! CycloneDX 1.6 JSON: the image as the `container` component of the
//! metadata, each package a `library` component with its purl.

use serde_json::{Value, json};

use super::inventory::Inventory;
use super::subject::Subject;

pub fn document(inventory: &Inventory, subject: &Subject<'_>) -> Value {
    let components: Vec<Value> = inventory
        .packages
        .iter()
        .map(|package| {
            json!({
                "type": "library",
                "bom-ref": package.purl,
                "name": package.name,
                "version": package.version,
                "purl": package.purl,
            })
        })
        .collect();
    json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", subject.uuid("cyclonedx")),
        "version": 1,
        "metadata": {
            "timestamp": crate::oci::rfc3339(subject.epoch),
            "tools": {
                "components": [{
                    "type": "application",
                    "name": "kiln",
                    "version": env!("CARGO_PKG_VERSION"),
                }],
            },
            "component": {
                "type": "container",
                "bom-ref": format!("image:{}", subject.digest),
                "name": subject.name.as_str(),
                "version": subject.version.as_str(),
                "hashes": [{ "alg": "SHA-256", "content": subject.digest.hex() }],
            },
        },
        "components": components,
        "dependencies": [{
            "ref": format!("image:{}", subject.digest),
            "dependsOn": inventory.packages.iter().map(|package| &package.purl).collect::<Vec<_>>(),
        }],
    })
}
