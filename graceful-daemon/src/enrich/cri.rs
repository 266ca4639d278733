//! CRI v1 client over the runtime's unix socket (containerd, CRI-O).
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient,
    ContainerStatusRequest, ImageSpec, ImageStatusRequest, ImageStatusResponse,
    PodSandboxStatusRequest, VersionRequest, VersionResponse,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::ContainerInfo;
use crate::signals::Signal;

/// Where runtimes put their CRI socket, in the order they are tried.
pub const KNOWN_SOCKETS: [&str; 3] = [
    "/run/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
    "/run/crio/crio.sock",
];
const TIMEOUT: Duration = Duration::from_secs(2);

/// `socket` as given, else the first known runtime socket that exists.
pub fn find_socket(socket: Option<&Path>) -> Option<PathBuf> {
    match socket {
        Some(p) => Some(p.to_path_buf()),
        None => KNOWN_SOCKETS.iter().map(PathBuf::from).find(|p| p.exists()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("no CRI socket found (tried {})", KNOWN_SOCKETS.join(", "))]
    NoSocket,
    #[error("CRI socket {path}: {error}")]
    Connect { path: PathBuf, error: String },
    #[error("CRI {call} on {path}: {error}")]
    Call {
        call: &'static str,
        path: PathBuf,
        error: String,
        /// The runtime answered (with an error status), as opposed to a broken connection.
        answered: bool,
    },
    #[error("CRI {call} on {path}: no answer within {TIMEOUT:?}")]
    Timeout { call: &'static str, path: PathBuf },
}

/// A gRPC channel to a runtime's unix socket (gRPC needs an authority: the one given is unused).
/// With a timeout, connecting and every call are bounded by it.
pub async fn channel(path: &Path, timeout: Option<Duration>) -> Result<Channel, CriError> {
    let failed = |error: String| CriError::Connect {
        path: path.to_path_buf(),
        error,
    };
    let mut endpoint =
        Endpoint::try_from("http://[::]:50051").map_err(|e| failed(e.to_string()))?;
    if let Some(t) = timeout {
        endpoint = endpoint.connect_timeout(t).timeout(t);
    }
    let socket = path.to_path_buf();
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .map_err(|e| failed(e.to_string()))
}

#[derive(Clone)]
pub struct CriClient {
    path: PathBuf,
    client: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl CriClient {
    /// Connects to `socket`, or to the first known socket that exists; checks it answers. Every
    /// call is bounded by a short timeout: enrichment must never hold the records up.
    pub async fn connect(socket: Option<&Path>) -> Result<CriClient, CriError> {
        Ok(CriClient::connect_unbounded(socket, Some(TIMEOUT)).await?.0)
    }

    /// As [`CriClient::connect`], with calls on the channel bounded by `timeout` only (None:
    /// as long as a pull or a stop takes), and the runtime's Version answer.
    pub async fn connect_unbounded(
        socket: Option<&Path>,
        timeout: Option<Duration>,
    ) -> Result<(CriClient, VersionResponse), CriError> {
        let path = find_socket(socket).ok_or(CriError::NoSocket)?;
        let channel = channel(&path, timeout).await?;
        let mut client = CriClient {
            path,
            client: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        };
        let call = client.client.version(VersionRequest {
            version: "v1".into(),
        });
        let version = bounded(&client.path, "Version", call).await?.into_inner();
        Ok((client, version))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The runtime service, for calls beyond enrichment's (running and stopping containers).
    pub fn runtime_service(&self) -> RuntimeServiceClient<Channel> {
        self.client.clone()
    }

    /// The image service, for calls beyond enrichment's (pulling).
    pub fn image_service(&self) -> ImageServiceClient<Channel> {
        self.images.clone()
    }

    /// Names, image and kubelet annotations of one container; a pod's sandbox (pause)
    /// container is reported as such.
    pub async fn container(&mut self, id: &str) -> Result<ContainerInfo, CriError> {
        let call = self.client.container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        });
        let reply = match bounded(&self.path, "ContainerStatus", call).await {
            Ok(r) => r,
            Err(e @ CriError::Timeout { .. }) => return Err(e),
            // Runtimes differ in the code they give for a sandbox id (containerd 1.6: Unknown).
            Err(e) => return self.sandbox(id).await.map_err(|_| e),
        };
        let status = reply.into_inner().status.unwrap_or_default();
        let name = status.metadata.map(|m| m.name).unwrap_or_default();
        let image = status.image.map(|i| i.image).unwrap_or_default();
        let mut info =
            ContainerInfo::from_kubelet(&status.labels, &status.annotations, &name, &image);
        let image_ref = match status.image_ref.as_str() {
            "" => image,
            r => r.to_string(),
        };
        info.stop_signal = self.image_stop_signal(&image_ref).await;
        Ok(info)
    }

    /// The image's STOPSIGNAL, from the runtime's verbose image status (its OCI config). None
    /// when it sets none or the runtime does not say.
    async fn image_stop_signal(&mut self, image: &str) -> Option<Signal> {
        stop_signal_of(&self.image_status(image).await.ok()?.info)
    }

    /// The runtime's verbose status of an image (`image` is None when the node does not have it).
    pub async fn image_status(&mut self, image: &str) -> Result<ImageStatusResponse, CriError> {
        let call = self.images.image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: true,
        });
        Ok(bounded(&self.path, "ImageStatus", call).await?.into_inner())
    }
}

/// `imageSpec.config.StopSignal` in the JSON that containerd and CRI-O put under `info`.
pub fn stop_signal_of(info: &std::collections::HashMap<String, String>) -> Option<Signal> {
    let json: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    json.pointer("/imageSpec/config/StopSignal")?
        .as_str()?
        .parse()
        .ok()
}

impl CriClient {
    async fn sandbox(&mut self, id: &str) -> Result<ContainerInfo, CriError> {
        let call = self.client.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        });
        let reply = bounded(&self.path, "PodSandboxStatus", call).await?;
        let status = reply.into_inner().status.unwrap_or_default();
        let mut info = ContainerInfo::from_kubelet(&status.labels, &status.annotations, "", "");
        info.sandbox = true;
        Ok(info)
    }
}

/// One CRI call, bounded in time, its errors named after the call.
async fn bounded<T>(
    path: &Path,
    call: &'static str,
    reply: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<tonic::Response<T>, CriError> {
    tokio::time::timeout(TIMEOUT, reply)
        .await
        .map_err(|_| CriError::Timeout {
            call,
            path: path.into(),
        })?
        .map_err(|e| CriError::Call {
            call,
            path: path.into(),
            error: e.message().to_string(),
            answered: e.code() != tonic::Code::Unavailable,
        })
}

impl CriError {
    /// The runtime is up: it answered, even if with an error (an unknown container).
    pub fn runtime_answered(&self) -> bool {
        matches!(self, CriError::Call { answered: true, .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signal_from_verbose_image_info() {
        let info = |json: &str| {
            [("info".to_string(), json.to_string())]
                .into_iter()
                .collect()
        };
        let verbose = r#"{"chainID":"sha256:1","imageSpec":{"architecture":"amd64","config":{"Entrypoint":["/app"],"StopSignal":"SIGQUIT"}}}"#;
        assert_eq!(stop_signal_of(&info(verbose)), Some(Signal::QUIT));
        assert_eq!(
            stop_signal_of(&info(r#"{"imageSpec":{"config":{}}}"#)),
            None
        );
        assert_eq!(stop_signal_of(&info("garbage")), None);
        assert_eq!(
            stop_signal_of(&info(
                r#"{"imageSpec":{"config":{"StopSignal":"SIGNOPE"}}}"#
            )),
            None
        );
        assert_eq!(stop_signal_of(&Default::default()), None);
    }
}
