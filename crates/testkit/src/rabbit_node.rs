//! A RabbitMQ node of the test's own, on free ports and in a temporary directory, for tests
//! that change a broker's state (a resource alarm) and so must never touch the shared node.
//! It is stopped and its files removed on `Drop`, also when the test fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Where distributions install the real scripts; `/usr/sbin/rabbitmq-server` on Debian is a
/// wrapper that switches to the `rabbitmq` user and the shared node's files.
const SCRIPT_DIRS: [&str; 4] = [
    "/usr/lib/rabbitmq/bin",
    "/usr/local/sbin",
    "/usr/sbin",
    "/opt/rabbitmq/sbin",
];
const STARTUP: Duration = Duration::from_secs(90);

pub struct RabbitNode {
    name: String,
    port: u16,
    dist_port: u16,
    scripts: PathBuf,
    dir: tempfile::TempDir,
}

impl RabbitNode {
    /// Starts a node, or says why it cannot: `None` (with the reason printed) when RabbitMQ
    /// is not installed, a panic when `EYE_REQUIRE_SERVICES=1`.
    pub fn start(test: &str) -> Option<Self> {
        let Some(scripts) = find_scripts() else {
            assert!(
                std::env::var("EYE_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "{test}: EYE_REQUIRE_SERVICES=1 but rabbitmq-server is not installed"
            );
            let _ = writeln!(
                std::io::stderr(),
                "note: skipping {test}: it starts a RabbitMQ node of its own and rabbitmq-server is not installed"
            );
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("eye-rabbit-")
            .tempdir()
            .unwrap();
        let id = Uuid::new_v4().simple().to_string();
        let node = Self {
            name: format!("eye-alarm-{}@localhost", &id[..12]),
            port: free_port(),
            dist_port: free_port(),
            scripts,
            dir,
        };
        node.write_files(&id);
        let started = node
            .script("rabbitmq-server")
            .arg("-detached")
            .output()
            .unwrap();
        assert!(started.status.success(), "{}", describe(&started));
        let deadline = Instant::now() + STARTUP;
        loop {
            let ready = node.ctl(&["await_startup", "--timeout", "30"]);
            if ready.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the test's RabbitMQ node did not start: {}\nlog: {}",
                describe(&ready),
                node.log_tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        Some(node)
    }

    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Sets a memory alarm: RabbitMQ blocks every publishing connection.
    pub fn raise_memory_alarm(&self) {
        self.ctl_ok(&["set_vm_memory_high_watermark", "0.0000001"]);
    }

    /// Clears it again.
    pub fn clear_memory_alarm(&self) {
        self.ctl_ok(&["set_vm_memory_high_watermark", "0.4"]);
    }

    fn write_files(&self, id: &str) {
        let root = self.dir.path();
        std::fs::write(
            root.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{}\n", self.port),
        )
        .unwrap();
        std::fs::write(root.join("rabbitmq-env.conf"), "").unwrap();
        std::fs::write(root.join("enabled_plugins"), "[].\n").unwrap();
        let home = root.join("home");
        std::fs::create_dir(&home).unwrap();
        let cookie = home.join(".erlang.cookie");
        std::fs::write(&cookie, id.to_uppercase()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400)).unwrap();
        }
    }

    /// A script of this installation, pointed at this node's files only.
    fn script(&self, name: &str) -> Command {
        let root = self.dir.path();
        let mut command = Command::new(self.scripts.join(name));
        command
            .current_dir(root)
            // Server and CLI read the Erlang cookie from $HOME.
            .env("HOME", root.join("home"))
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", root.join("rabbitmq.conf"))
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                root.join("advanced.config"),
            )
            .env("RABBITMQ_CONF_ENV_FILE", root.join("rabbitmq-env.conf"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                root.join("enabled_plugins"),
            )
            .env("RABBITMQ_MNESIA_BASE", root.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", root.join("log"))
            .env("RABBITMQ_PID_FILE", root.join("pid"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
        command
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.script("rabbitmqctl")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .unwrap()
    }

    fn ctl_ok(&self, args: &[&str]) {
        let output = self.ctl(args);
        assert!(
            output.status.success(),
            "rabbitmqctl {}: {}",
            args.join(" "),
            describe(&output)
        );
    }

    fn log_tail(&self) -> String {
        let log = self
            .dir
            .path()
            .join("log")
            .join(format!("{}.log", self.name));
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        // With the pid file, `stop` returns once the node's process has ended.
        let pid_file = self.dir.path().join("pid");
        let stopped = self.ctl(&["stop", &pid_file.display().to_string()]);
        if !stopped.status.success()
            && let Some(pid) = self.pid()
        {
            // The node's own process, by the id it wrote; nothing else is touched.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

fn find_scripts() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    SCRIPT_DIRS
        .iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path))
        .find(|dir| is_file(&dir.join("rabbitmq-server")) && is_file(&dir.join("rabbitmqctl")))
}

fn is_file(path: &Path) -> bool {
    path.is_file()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn describe(output: &Output) -> String {
    format!(
        "{}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
