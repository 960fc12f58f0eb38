//! The AMIs made of each stored version, kept beside the layout in
//! `.kiln/amis/NAME.json` (version → one record per region), so `kiln
//! images` shows them and a rerun knows them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{Result, Store, StoreError};
use crate::aws::ami::AmiRecord;
use crate::io_error::IoError;
use crate::reference::{ImageName, Version};

type AmisOfImage = BTreeMap<String, Vec<AmiRecord>>;

impl Store {
    fn amis_path(&self, name: &ImageName) -> PathBuf {
        self.private_dir()
            .join("amis")
            .join(format!("{}.json", name.as_str().replace('/', "%2F")))
    }

    /// Every version's AMIs.
    pub fn amis_of(&self, name: &ImageName) -> Result<AmisOfImage> {
        let path = self.amis_path(name);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|error| StoreError::InvalidLayout {
                    path,
                    reason: error.to_string(),
                })
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(AmisOfImage::new()),
            Err(source) => Err(IoError::new("read", &path, source).into()),
        }
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
