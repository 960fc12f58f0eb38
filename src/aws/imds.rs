//! Credentials of the EC2 instance kiln runs on, from the instance
//! metadata service, IMDSv2 only: a session token first (`PUT`), then the
//! role's keys with it. Short timeouts: off EC2 nothing answers.

use std::time::Duration;

use super::client::AwsError;
use super::sigv4::Credentials;

const TOKEN_TTL_SECONDS: &str = "300";

fn failed(reason: String) -> AwsError {
    AwsError::Failed {
        action: "get credentials from the instance metadata service".to_owned(),
        region: "this instance".to_owned(),
        reason,
    }
}

pub async fn instance_credentials(
    http: &reqwest::Client,
    endpoint: &str,
) -> Result<Credentials, AwsError> {
    let timeout = Duration::from_secs(2);
    let unreachable = |error: reqwest::Error| {
        failed(format!(
            "{endpoint} did not answer ({error}); off EC2, set AWS_ACCESS_KEY_ID or a profile"
        ))
    };
    let checked = |response: reqwest::Response| async move {
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(failed(format!("{endpoint} answered {status}")))
        }
    };
    let token = checked(
        http.put(format!("{endpoint}/latest/api/token"))
            .header("x-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS)
            .timeout(timeout)
            .send()
            .await
            .map_err(unreachable)?,
    )
    .await?;
    let get = |path: String| {
        http.get(format!("{endpoint}{path}"))
            .header("x-aws-ec2-metadata-token", token.trim())
            .timeout(timeout)
            .send()
    };
    let roles = checked(
        get("/latest/meta-data/iam/security-credentials/".to_owned())
            .await
            .map_err(unreachable)?,
    )
    .await?;
    let role = roles
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .ok_or_else(|| failed("the instance has no IAM role".to_owned()))?
        .to_owned();
    let document = checked(
        get(format!("/latest/meta-data/iam/security-credentials/{role}"))
            .await
            .map_err(unreachable)?,
    )
    .await?;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        access_key_id: String,
        secret_access_key: String,
        token: Option<String>,
    }
    let answer: Answer = serde_json::from_str(&document)
        .map_err(|_| failed(format!("the credentials of role {role} are not JSON")))?;
    Ok(Credentials {
        access_key_id: answer.access_key_id,
        secret_access_key: answer.secret_access_key,
        session_token: answer.token,
    })
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    /// A stand-in for the metadata service (which exists only on EC2): it
    /// answers the three IMDSv2 requests and refuses a GET without the
    /// token.
    fn serve(listener: TcpListener) {
        for stream in listener.incoming().take(3) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                headers.push(line.trim().to_ascii_lowercase());
            }
            let length: usize = headers
                .iter()
                .find_map(|h| h.strip_prefix("content-length: ")?.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let has_token = headers
                .iter()
                .any(|h| h == "x-aws-ec2-metadata-token: tok-1");
            let (status, answer) = match (request_line.split(' ').nth(1).unwrap(), has_token) {
                ("/latest/api/token", _) if request_line.starts_with("PUT") => ("200 OK", "tok-1".to_owned()),
                ("/latest/meta-data/iam/security-credentials/", true) => ("200 OK", "ci-role\n".to_owned()),
                ("/latest/meta-data/iam/security-credentials/ci-role", true) => (
                    "200 OK",
                    r#"{"Code":"Success","AccessKeyId":"ASIAIMDS","SecretAccessKey":"s","Token":"t","Expiration":"2030-01-01T00:00:00Z"}"#.to_owned(),
                ),
                _ => ("401 Unauthorized", String::new()),
            };
            write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            )
            .unwrap();
        }
    }

    #[test]
    fn a_session_token_then_the_roles_keys() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || serve(listener));
        let http = super::super::client::http_client().unwrap();
        let credentials =
            crate::remote::block_on(super::instance_credentials(&http, &endpoint)).unwrap();
        assert_eq!(credentials.access_key_id, "ASIAIMDS");
        assert_eq!(credentials.session_token.as_deref(), Some("t"));
        server.join().unwrap();
        let error =
            crate::remote::block_on(super::instance_credentials(&http, "http://127.0.0.1:9"))
                .unwrap_err()
                .to_string();
        assert!(error.contains("did not answer"), "{error}");
    }
}
