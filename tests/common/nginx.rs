//! A real nginx in front of the guard, the way operators run it: `proxy_pass` with
//! `$proxy_add_x_forwarded_for`. nginx comes from the distribution's package (`.ci/run`
//! installs it); a missing nginx fails the test rather than skipping it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Nginx {
    child: Child,
    pub addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

fn binary() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("nginx is not installed (apt-get install nginx; .ci/run does this)");
}

impl Nginx {
    /// nginx on a free loopback port proxying to `upstream` (`host:port`).
    ///
    /// The port is found free and then bound by nginx ([`super::process::free_port`]):
    /// should something take it in between, nginx exits, and a connection to the port would
    /// reach that other server. So nginx is ready only once it has written its pid file
    /// (after binding its port) and is still running; if it exited, it is started again on
    /// another port.
    pub async fn start(upstream: &str) -> Nginx {
        let mut errors = String::new();
        for _ in 0..5 {
            match Nginx::try_start(upstream).await {
                Ok(nginx) => return nginx,
                Err(error) => errors.push_str(&error),
            }
        }
        panic!("nginx did not start: {errors}");
    }

    async fn try_start(upstream: &str) -> Result<Nginx, String> {
        let dir = tempfile::tempdir().unwrap();
        let port = super::process::free_port();
        let d = dir.path().display();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://{upstream};
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_buffering off;
    }}
  }}
}}
"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let mut child = Command::new(binary())
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let pid = dir.path().join("nginx.pid");
        for _ in 0..200 {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "nginx exited ({status}): {}",
                    std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
                ));
            }
            if pid.exists() && tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(Nginx {
                    child,
                    addr,
                    _dir: dir,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!(
            "nginx did not answer in 5 s: {}",
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        ))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
