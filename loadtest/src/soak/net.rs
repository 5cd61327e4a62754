//! The soak's network: black holes that drop packets without a word (no RST, no ICMP), made of
//! network namespaces and veth pairs (iproute2, as root), all of it the soak's own and removed
//! when it ends. Nothing of the machine's own network is changed: no forwarding, no routes
//! outside the soak's private subnet, no firewall rules.
//!
//! - A *hub*: a veth pair left in the root namespace, whose address is where the replicas take
//!   agents (a local address of the root namespace that no cut takes down).
//! - One namespace per agent, joined to the root namespace by a veth pair; the agent reaches the
//!   hub through it. Taking the root end down is a black hole between that agent and every
//!   replica: the root namespace loses its route to the agent, the agent's end loses carrier,
//!   and TCP on both sides retransmits into nothing.
//! - One namespace for PostgreSQL with a veth pair per replica; replica `r` connects through its
//!   own pair, so taking it down cuts that replica (and only it) from the store.

use std::process::Command;

/// The soak's namespaces and links.
#[derive(Debug)]
pub struct Net {
    /// Prefix of every name (interfaces may have at most 15 characters).
    prefix: String,
    /// Second octet of the soak's 10.x.0.0/16.
    octet: u8,
    namespaces: Vec<String>,
    /// Root-namespace interfaces to delete (the hub; the others go with their namespaces).
    links: Vec<String>,
}

/// Runs `ip` with `args`; its stderr as the error.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().map_err(|e| {
        anyhow::anyhow!("running `ip` (iproute2): {e}; install it with `apt-get install iproute2`")
    })?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {} (the soak's black holes need root and network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl Net {
    /// Chooses a 10.x.0.0/16 that no interface of this machine uses (so two soaks at once do
    /// not meet) and names everything after this process.
    pub fn new() -> anyhow::Result<Net> {
        let out = Command::new("ip").args(["-4", "-o", "addr"]).output()?;
        let used = String::from_utf8_lossy(&out.stdout).into_owned();
        let pid = std::process::id();
        let octet = (0..100u32)
            .map(|k| (100 + (pid + k) % 150) as u8)
            .find(|o| !used.contains(&format!(" 10.{o}.")))
            .ok_or_else(|| anyhow::anyhow!("no free 10.x.0.0/16 for the soak's network"))?;
        Ok(Net { prefix: format!("rm{}", pid % 100_000), octet, namespaces: Vec::new(), links: Vec::new() })
    }

    /// `10.x.k.last`.
    fn addr(&self, k: u8, last: u8) -> String {
        format!("10.{}.{k}.{last}", self.octet)
    }

    /// The hub: an address of the root namespace on a veth pair that stays up. Returns it.
    pub fn hub(&mut self) -> anyhow::Result<String> {
        let (a, b) = (format!("{}h0", self.prefix), format!("{}h1", self.prefix));
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
        self.links.push(a.clone());
        let addr = self.addr(0, 1);
        ip(&["addr", "add", &format!("{addr}/32"), "dev", &a])?;
        ip(&["link", "set", &a, "up"])?;
        ip(&["link", "set", &b, "up"])?;
        Ok(addr)
    }

    /// A namespace named after `name`, with loopback up.
    fn namespace(&mut self, name: &str) -> anyhow::Result<String> {
        let ns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A veth pair from the root namespace (`root`) into `ns` (`inner`), on 10.x.k.0/24: the
    /// root end .1, the inner end .2. With `route`, the inner end is the namespace's default
    /// route. Returns the inner end's address.
    fn pair(&mut self, ns: &str, root: &str, inner: &str, k: u8, route: bool) -> anyhow::Result<String> {
        ip(&["link", "add", root, "type", "veth", "peer", "name", inner, "netns", ns])?;
        let (outside, inside) = (self.addr(k, 1), self.addr(k, 2));
        ip(&["addr", "add", &format!("{outside}/24"), "dev", root])?;
        ip(&["-n", ns, "addr", "add", &format!("{inside}/24"), "dev", inner])?;
        ip(&["link", "set", root, "up"])?;
        ip(&["-n", ns, "link", "set", inner, "up"])?;
        if route {
            ip(&["-n", ns, "route", "add", "default", "via", &outside])?;
        }
        Ok(inside)
    }

    /// Agent `i`'s namespace, joined to the root namespace (and so to the hub). Returns the
    /// namespace.
    pub fn agent(&mut self, i: usize) -> anyhow::Result<String> {
        let k = u8::try_from(i + 1)
            .ok()
            .filter(|k| *k < 100)
            .ok_or_else(|| anyhow::anyhow!("the soak's network holds at most 99 agents"))?;
        let ns = self.namespace(&format!("a{i}"))?;
        let (root, inner) = (self.agent_link(i), format!("{}b{i}", self.prefix));
        self.pair(&ns, &root, &inner, k, true)?;
        Ok(ns)
    }

    fn agent_link(&self, i: usize) -> String {
        format!("{}a{i}", self.prefix)
    }

    fn store_link(&self, r: usize) -> String {
        format!("{}p{r}", self.prefix)
    }

    /// PostgreSQL's namespace, with one pair per replica. Returns the namespace and, for each
    /// replica, the address at which it reaches PostgreSQL.
    pub fn store(&mut self, replicas: usize) -> anyhow::Result<(String, Vec<String>)> {
        let ns = self.namespace("pg")?;
        let mut addrs = Vec::new();
        for r in 0..replicas {
            let k = u8::try_from(200 + r).map_err(|_| anyhow::anyhow!("too many replicas"))?;
            let (root, inner) = (self.store_link(r), format!("{}q{r}", self.prefix));
            addrs.push(self.pair(&ns, &root, &inner, k, false)?);
        }
        Ok((ns, addrs))
    }

    /// Takes agent `i`'s link down (`cut`) or up again.
    pub fn cut_agent(&self, i: usize, cut: bool) -> anyhow::Result<()> {
        ip(&["link", "set", &self.agent_link(i), if cut { "down" } else { "up" }])
    }

    /// Takes replica `r`'s link to PostgreSQL down (`cut`) or up again.
    pub fn cut_store(&self, r: usize, cut: bool) -> anyhow::Result<()> {
        ip(&["link", "set", &self.store_link(r), if cut { "down" } else { "up" }])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // A namespace's end of each pair goes with it, and the root end with its peer.
        for ns in &self.namespaces {
            let _ = ip(&["netns", "delete", ns]);
        }
        for link in &self.links {
            let _ = ip(&["link", "delete", link]);
        }
    }
}
