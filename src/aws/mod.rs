//! Talking to AWS without its SDK (minutes of build time on a 2-core
//! machine): request signing first; the EBS, EC2 and SSM calls an AMI
//! needs build on it.

pub mod blocks;
pub mod credentials;
pub mod sigv4;
