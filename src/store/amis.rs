//! The AMIs made of each stored version, kept beside the layout in
//! `.kiln/amis/NAME.json` (version → one record per region), so `kiln
//! images` shows them and a rerun knows them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{Result, Store};
use crate::aws::ami::AmiRecord;
use crate::reference::{ImageName, Version};

type AmisOfImage = BTreeMap<String, Vec<AmiRecord>>;

impl Store {
    fn amis_path(&self, name: &ImageName) -> PathBuf {
        self.private_image_file("amis", name)
    }

    /// Every version's AMIs.
    pub fn amis_of(&self, name: &ImageName) -> Result<AmisOfImage> {
        self.read_private_json(&self.amis_path(name))
    }

    /// Records AMIs of a version; a record for the same region and name
    /// replaces the old one.
    pub fn record_amis(
        &self,
        name: &ImageName,
        version: &Version,
        records: &[AmiRecord],
    ) -> Result<()> {
        let _lock = self.lock()?;
        let mut amis = self.amis_of(name)?;
        let known = amis.entry(version.to_string()).or_default();
        for record in records {
            known.retain(|old| !(old.region == record.region && old.name == record.name));
            known.push(record.clone());
        }
        self.write_private(
            &self.amis_path(name),
            &serde_json::to_vec_pretty(&amis).expect("AMI records serialize"),
        )
    }
}
