//! SPDX 2.3 JSON: the image as the package the document describes, which
//! contains each distribution package (with its purl as an external ref).
//! Package ids are by index: a package name (`g++`) is not a valid id.

use serde_json::{Value, json};

use super::inventory::Inventory;
use super::subject::Subject;

pub fn document(inventory: &Inventory, subject: &Subject<'_>) -> Value {
    let image_id = "SPDXRef-Image";
    let mut packages = vec![json!({
        "name": subject.name.as_str(),
        "SPDXID": image_id,
        "versionInfo": subject.version.as_str(),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{ "algorithm": "SHA256", "checksumValue": subject.digest.hex() }],
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": image_id,
    })];
    for (index, package) in inventory.packages.iter().enumerate() {
        let id = format!("SPDXRef-Package-{}", index + 1);
        packages.push(json!({
            "name": package.name,
            "SPDXID": id,
            "versionInfo": package.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": package.purl,
            }],
        }));
        relationships.push(json!({
            "spdxElementId": image_id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}-{}", subject.name, subject.version),
        "documentNamespace": format!(
            "https://kiln.dev/spdx/{}-{}-{}",
            subject.name.as_str().replace('/', "_"),
            subject.version,
            subject.uuid("spdx")
        ),
        "creationInfo": {
            "created": crate::oci::rfc3339(subject.epoch),
            "creators": [format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": relationships,
    })
}
