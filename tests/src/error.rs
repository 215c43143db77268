use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while starting, using or stopping the real parts.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{binary} not found in {dir}: {hint}")]
    MissingBinary {
        binary: String,
        dir: PathBuf,
        hint: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("generating certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("{process} exited early ({status}); last lines of {log}:\n{tail}")]
    ProcessExited {
        process: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
}

impl HarnessError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}
