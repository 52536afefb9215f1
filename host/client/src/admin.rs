//! The admin and cluster requests as typed methods of [`Client`]:
//! deployments, the OpenAPI document, stats, members, dead letters,
//! reminders and ping; each is one request and its one expected answer.

use rio_protocol::{
    DeadLetterInfo, DeploymentInfo, MemberInfo, ReminderInfo, Request, Response, SiloStats,
};

use crate::{Client, ClientError};

impl Client {
    /// Deploys a component under `service_type`.
    pub async fn deploy(
        &self,
        service_type: &str,
        component: Vec<u8>,
    ) -> Result<DeploymentInfo, ClientError> {
        let request = Request::Deploy {
            service_type: service_type.to_string(),
            component,
        };
        match self.request(request).await? {
            Response::Deployed(info) => Ok(info),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Removes the service type `service_type` from the silo (and its
    /// cluster); its objects' state stays stored.
    pub async fn undeploy(&self, service_type: &str) -> Result<DeploymentInfo, ClientError> {
        let request = Request::Undeploy {
            service_type: service_type.to_string(),
        };
        match self.request(request).await? {
            Response::Undeployed(info) => Ok(info),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Lists the service types deployed on the silo.
    pub async fn deployments(&self) -> Result<Vec<DeploymentInfo>, ClientError> {
        match self.request(Request::ListDeployments).await? {
            Response::Deployments(list) => Ok(list),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The silo's HTTP gateway as an OpenAPI 3.1 document (JSON text):
    /// every deployed type, or only `service_type`.
    pub async fn open_api(&self, service_type: Option<&str>) -> Result<String, ClientError> {
        let request = Request::OpenApi {
            service_type: service_type.map(str::to_string),
        };
        match self.request(request).await? {
            Response::OpenApi(document) => Ok(document),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The silo's counters.
    pub async fn stats(&self) -> Result<SiloStats, ClientError> {
        match self.request(Request::Stats).await? {
            Response::Stats(stats) => Ok(*stats),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The silos of the cluster this silo belongs to (itself alone when it
    /// runs without a cluster store).
    pub async fn members(&self) -> Result<Vec<MemberInfo>, ClientError> {
        match self.request(Request::Members).await? {
            Response::Members(list) => Ok(list),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The one-way messages receivers refused (of receivers of
    /// `receiver_type` if given), oldest first, at most `limit`.
    pub async fn dead_letters(
        &self,
        receiver_type: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeadLetterInfo>, ClientError> {
        let request = Request::DeadLetters {
            receiver_type: receiver_type.map(str::to_string),
            limit,
        };
        match self.request(request).await? {
            Response::DeadLetters(letters) => Ok(letters),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Durable reminders: `object`'s (as `(type, id)`), or with `None` the
    /// next due across the cluster, earliest first; at most `limit`.
    pub async fn reminders(
        &self,
        object: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<ReminderInfo>, ClientError> {
        let request = Request::Reminders {
            object: object.map(|(service_type, id)| (service_type.to_string(), id.to_string())),
            limit,
        };
        match self.request(request).await? {
            Response::Reminders(reminders) => Ok(reminders),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The silo's process generation, if it answers.
    pub async fn ping(&self) -> Result<i64, ClientError> {
        match self.request(Request::Ping).await? {
            Response::Pong { generation } => Ok(generation),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}
