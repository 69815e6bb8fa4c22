//! Ollama's CORS check (gin-contrib/cors, configured in `server/routes.go` from
//! `envconfig.AllowedOrigins`): a request whose `Origin` is not allowed is answered 403 with
//! an empty body. Without `OLLAMA_ORIGINS` Ollama allows `http(s)://localhost`,
//! `127.0.0.1` and `0.0.0.0` on any port, and the `app://`, `file://`, `tauri://`,
//! `vscode-webview://` and `vscode-file://` schemes; an `Origin` naming the request's own
//! `Host` is not a CORS request at all.

/// Whether a request with this `Origin` (and this `Host`) passes the check.
pub(crate) fn origin_allowed(origin: &str, host: &str) -> bool {
    if origin == format!("http://{host}") || origin == format!("https://{host}") {
        return true;
    }
    let local = ["localhost", "127.0.0.1", "0.0.0.0"].iter().any(|h| {
        ["http://", "https://"].iter().any(|scheme| {
            origin
                .strip_prefix(scheme)
                .and_then(|rest| rest.strip_prefix(h))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
        })
    });
    local
        || [
            "app://",
            "file://",
            "tauri://",
            "vscode-webview://",
            "vscode-file://",
        ]
        .iter()
        .any(|scheme| origin.starts_with(scheme))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_origins_and_app_schemes_pass_and_any_other_site_does_not() {
        for origin in [
            "http://localhost",
            "http://localhost:3000",
            "https://127.0.0.1:8443",
            "http://0.0.0.0:8080",
            "tauri://localhost",
            "vscode-webview://abc",
            "http://ollama.example:11434",
        ] {
            assert!(origin_allowed(origin, "ollama.example:11434"), "{origin}");
        }
        for origin in [
            "http://evil.example",
            "http://localhost.evil.example",
            "https://127.0.0.1.evil.example",
            "null",
            "",
        ] {
            assert!(!origin_allowed(origin, "ollama.example:11434"), "{origin}");
        }
    }
}
