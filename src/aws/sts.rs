//! Web identity, how CI systems hand out AWS roles: the OIDC token in a
//! file is traded for a session with `AssumeRoleWithWebIdentity` (an
//! unsigned STS call).

use std::path::Path;

use super::client::{AwsClient, AwsError, AwsRequest, Endpoints};
use super::sigv4::Credentials;

pub async fn assume_role_with_web_identity(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    region: &str,
    role_arn: &str,
    token_file: &Path,
    session_name: &str,
) -> Result<Credentials, AwsError> {
    let token = std::fs::read_to_string(token_file).map_err(|error| AwsError::Failed {
        action: "AssumeRoleWithWebIdentity".to_owned(),
        region: region.to_owned(),
        reason: format!(
            "cannot read the token file {}: {error}",
            token_file.display()
        ),
    })?;
    let client = AwsClient::new(http.clone(), endpoints.clone(), None);
    let form = super::ec2::form(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", role_arn),
        ("RoleSessionName", session_name),
        ("WebIdentityToken", token.trim()),
    ]);
    let request = AwsRequest::new(
        "AssumeRoleWithWebIdentity",
        "sts",
        region,
        reqwest::Method::POST,
        "/",
    )
    .body(
        "application/x-www-form-urlencoded; charset=utf-8",
        form.into_bytes(),
    );
    let response = client.send(&request).await?;
    let root = super::xml::parse(&response.text()).ok_or_else(|| request.bad_answer("not XML"))?;
    let credentials = root
        .child("AssumeRoleWithWebIdentityResult")
        .and_then(|result| result.child("Credentials"))
        .ok_or_else(|| request.bad_answer("no Credentials"))?;
    let field = |name: &str| {
        credentials
            .text_at(&[name])
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| request.bad_answer(format!("no {name}")))
    };
    Ok(Credentials {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: Some(field("SessionToken")?),
    })
}
