//! Talking to AWS without its SDK (minutes of build time on a 2-core
//! machine): request signing, credentials as AWS's tools find them, and a
//! thin client for the EBS, EC2, SSM and STS calls an AMI needs.

pub mod ami;
pub mod blocks;
pub mod client;
pub mod credentials;
pub mod ebs;
pub mod ec2;
pub mod imds;
pub mod sigv4;
pub mod ssm;
pub mod sts;
pub mod xml;
