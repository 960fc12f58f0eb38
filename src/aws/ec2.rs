//! The EC2 calls an AMI needs, in EC2's Query protocol (a form posted,
//! XML back): find, register, copy, tag, share and delete images and
//! snapshots.

use super::client::{AwsClient, AwsError, AwsRequest};
use super::xml::Element;

const API_VERSION: &str = "2016-11-15";

/// A form body, RFC 3986-encoded.
pub fn form(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(name, value)| {
            format!(
                "{}={}",
                super::sigv4::encode(name),
                super::sigv4::encode(value)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// An image as `DescribeImages` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct FoundImage {
    pub image_id: String,
    pub name: String,
    pub state: String,
    pub tags: Vec<(String, String)>,
    pub snapshot_ids: Vec<String>,
}

impl FoundImage {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

/// What `RegisterImage` is given.
#[derive(Clone, Debug)]
pub struct Registration<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub architecture: &'a str,
    pub snapshot_id: &'a str,
    pub volume_size_gib: u64,
    pub volume_type: &'a str,
    pub boot_mode: &'a str,
    pub ena: bool,
    pub imds_v2_required: bool,
    pub tpm: bool,
}

/// EC2 in one region.
pub struct Ec2<'a> {
    pub client: &'a AwsClient,
    pub region: &'a str,
}

impl Ec2<'_> {
    /// One Query call; parameters as borrowed or owned text.
    async fn call<K: AsRef<str>, V: AsRef<str>>(
        &self,
        action: &str,
        params: &[(K, V)],
    ) -> Result<Element, AwsError> {
        let mut all = vec![("Action", action), ("Version", API_VERSION)];
        all.extend(
            params
                .iter()
                .map(|(name, value)| (name.as_ref(), value.as_ref())),
        );
        let request = AwsRequest::new(action, "ec2", self.region, reqwest::Method::POST, "/").body(
            "application/x-www-form-urlencoded; charset=utf-8",
            form(&all).into_bytes(),
        );
        let response = self.client.send(&request).await?;
        super::xml::parse(&response.text()).ok_or_else(|| request.bad_answer("not XML"))
    }

    fn images(root: &Element) -> Vec<FoundImage> {
        root.items("imagesSet")
            .map(|item| FoundImage {
                image_id: item.text_at(&["imageId"]).unwrap_or_default().to_owned(),
                name: item.text_at(&["name"]).unwrap_or_default().to_owned(),
                state: item.text_at(&["imageState"]).unwrap_or_default().to_owned(),
                tags: item
                    .items("tagSet")
                    .map(|tag| {
                        (
                            tag.text_at(&["key"]).unwrap_or_default().to_owned(),
                            tag.text_at(&["value"]).unwrap_or_default().to_owned(),
                        )
                    })
                    .collect(),
                snapshot_ids: item
                    .items("blockDeviceMapping")
                    .filter_map(|mapping| mapping.text_at(&["ebs", "snapshotId"]))
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
            .filter(|image| !image.image_id.is_empty())
            .collect()
    }

    /// This account's images called `name`.
    pub async fn images_named(&self, name: &str) -> Result<Vec<FoundImage>, AwsError> {
        let root = self
            .call(
                "DescribeImages",
                &[
                    ("Owner.1", "self"),
                    ("Filter.1.Name", "name"),
                    ("Filter.1.Value.1", name),
                ],
            )
            .await?;
        Ok(Self::images(&root)
            .into_iter()
            .filter(|image| image.name == name)
            .collect())
    }

    pub async fn image(&self, image_id: &str) -> Result<Option<FoundImage>, AwsError> {
        match self
            .call("DescribeImages", &[("ImageId.1", image_id)])
            .await
        {
            Ok(root) => Ok(Self::images(&root).into_iter().next()),
            Err(error)
                if error
                    .code()
                    .is_some_and(|code| code.starts_with("InvalidAMIID")) =>
            {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    pub async fn register_image(&self, image: &Registration<'_>) -> Result<String, AwsError> {
        let volume_size = image.volume_size_gib.to_string();
        let mut params = vec![
            ("Name", image.name),
            ("Description", image.description),
            ("Architecture", image.architecture),
            ("VirtualizationType", "hvm"),
            ("RootDeviceName", "/dev/xvda"),
            ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
            ("BlockDeviceMapping.1.Ebs.SnapshotId", image.snapshot_id),
            ("BlockDeviceMapping.1.Ebs.VolumeSize", volume_size.as_str()),
            ("BlockDeviceMapping.1.Ebs.VolumeType", image.volume_type),
            ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true"),
            ("BootMode", image.boot_mode),
        ];
        if image.ena {
            params.push(("EnaSupport", "true"));
            params.push(("SriovNetSupport", "simple"));
        }
        if image.imds_v2_required {
            params.push(("ImdsSupport", "v2.0"));
        }
        if image.tpm {
            params.push(("TpmSupport", "v2.0"));
        }
        let root = self.call("RegisterImage", &params).await?;
        root.text_at(&["imageId"])
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| self.no_id("RegisterImage", "imageId"))
    }

    fn no_id(&self, action: &str, field: &str) -> AwsError {
        AwsError::Answer {
            action: action.to_owned(),
            region: self.region.to_owned(),
            reason: format!("no {field}"),
        }
    }

    /// `CopyImage` into this region; returns the new image's id.
    pub async fn copy_image(
        &self,
        source_region: &str,
        source_image_id: &str,
        name: &str,
        description: &str,
        client_token: &str,
    ) -> Result<String, AwsError> {
        let root = self
            .call(
                "CopyImage",
                &[
                    ("SourceRegion", source_region),
                    ("SourceImageId", source_image_id),
                    ("Name", name),
                    ("Description", description),
                    ("ClientToken", client_token),
                ],
            )
            .await?;
        root.text_at(&["imageId"])
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| self.no_id("CopyImage", "imageId"))
    }

    pub async fn create_tags(
        &self,
        resources: &[&str],
        tags: &[(String, String)],
    ) -> Result<(), AwsError> {
        let mut owned: Vec<(String, String)> = Vec::new();
        for (index, resource) in resources.iter().enumerate() {
            owned.push((format!("ResourceId.{}", index + 1), (*resource).to_owned()));
        }
        for (index, (key, value)) in tags.iter().enumerate() {
            owned.push((format!("Tag.{}.Key", index + 1), key.clone()));
            owned.push((format!("Tag.{}.Value", index + 1), value.clone()));
        }
        self.call("CreateTags", &owned).await.map(drop)
    }

    /// A snapshot's status (`pending`, `completed`, `error`), `None` if
    /// there is no such snapshot.
    pub async fn snapshot_status(&self, snapshot_id: &str) -> Result<Option<String>, AwsError> {
        let root = match self
            .call("DescribeSnapshots", &[("SnapshotId.1", snapshot_id)])
            .await
        {
            Ok(root) => root,
            Err(error) if error.code() == Some("InvalidSnapshot.NotFound") => return Ok(None),
            Err(error) => Err(error)?,
        };
        Ok(root
            .items("snapshotSet")
            .find_map(|item| item.text_at(&["status"]))
            .map(str::to_owned))
    }

    /// Lets `accounts` (or everyone, `all`) launch the image.
    pub async fn share_image(&self, image_id: &str, accounts: &[String]) -> Result<(), AwsError> {
        let mut owned = vec![("ImageId".to_owned(), image_id.to_owned())];
        for (index, account) in accounts.iter().enumerate() {
            let key = if account == "all" { "Group" } else { "UserId" };
            owned.push((
                format!("LaunchPermission.Add.{}.{key}", index + 1),
                account.clone(),
            ));
        }
        self.call("ModifyImageAttribute", &owned).await.map(drop)
    }

    /// Lets `accounts` (or everyone) make volumes of the snapshot, which
    /// launching a shared image needs.
    pub async fn share_snapshot(
        &self,
        snapshot_id: &str,
        accounts: &[String],
    ) -> Result<(), AwsError> {
        let mut owned = vec![
            ("SnapshotId".to_owned(), snapshot_id.to_owned()),
            ("Attribute".to_owned(), "createVolumePermission".to_owned()),
            ("OperationType".to_owned(), "add".to_owned()),
        ];
        for (index, account) in accounts.iter().enumerate() {
            let key = if account == "all" {
                "UserGroup"
            } else {
                "UserId"
            };
            owned.push((format!("{key}.{}", index + 1), account.clone()));
        }
        self.call("ModifySnapshotAttribute", &owned).await.map(drop)
    }

    pub async fn deregister_image(&self, image_id: &str) -> Result<(), AwsError> {
        self.call("DeregisterImage", &[("ImageId", image_id)])
            .await
            .map(drop)
    }

    pub async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), AwsError> {
        match self
            .call("DeleteSnapshot", &[("SnapshotId", snapshot_id)])
            .await
        {
            Err(error) if error.code() == Some("InvalidSnapshot.NotFound") => Ok(()),
            other => other.map(drop),
        }
    }
}
