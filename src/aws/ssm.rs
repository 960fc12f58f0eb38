//! The SSM parameter that names the newest AMI (`/golden/web/latest`), so
//! launch templates and Terraform find it without a search.

use super::client::{AwsClient, AwsError, AwsRequest};

async fn call(
    client: &AwsClient,
    region: &str,
    action: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, AwsError> {
    let target = format!("AmazonSSM.{action}");
    let request = AwsRequest::new(action, "ssm", region, reqwest::Method::POST, "/")
        .header("x-amz-target", target)
        .body("application/x-amz-json-1.1", body.to_string().into_bytes());
    let response = client.send(&request).await?;
    serde_json::from_slice(&response.body).map_err(|_| request.bad_answer("not JSON"))
}

/// The parameter's value, `None` if there is no such parameter.
pub async fn parameter(
    client: &AwsClient,
    region: &str,
    name: &str,
) -> Result<Option<String>, AwsError> {
    match call(
        client,
        region,
        "GetParameter",
        serde_json::json!({"Name": name}),
    )
    .await
    {
        Ok(answer) => Ok(answer
            .pointer("/Parameter/Value")
            .and_then(|value| value.as_str())
            .map(str::to_owned)),
        Err(error) if error.code() == Some("ParameterNotFound") => Ok(None),
        Err(error) => Err(error),
    }
}

/// Points the parameter at an AMI id (an `aws:ec2:image` parameter).
pub async fn put_image_parameter(
    client: &AwsClient,
    region: &str,
    name: &str,
    image_id: &str,
) -> Result<(), AwsError> {
    call(
        client,
        region,
        "PutParameter",
        serde_json::json!({
            "Name": name,
            "Value": image_id,
            "Type": "String",
            "DataType": "aws:ec2:image",
            "Overwrite": true,
        }),
    )
    .await
    .map(drop)
}
