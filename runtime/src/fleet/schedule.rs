//! Placement, as a plain function: which node each job without a live
//! owner goes to. The scheduler node calls it on every change it sees and
//! writes what it returns; nothing here talks to etcd.
//!
//! A job weighs its parallelism (the default given at deploy, 1 without);
//! a node's load is the weight of the jobs it owns divided by the cores it
//! declares. Each job goes to the live, non-draining node whose load after
//! taking it is lowest (ties: the lower node ID), so jobs spread by count
//! on equal nodes and by cores on unequal ones.
//!
//! Memory is a limit, not a weight: a job needs the linear memory its
//! subtasks may grow to (`limits.memory-mb` × its operator subtasks); a
//! node that declares memory takes a job only while the jobs it owns and
//! that one fit in it. A job no node can take waits, with the reason, until
//! one can (a node joins, a job ends).
//!
//! A job its node gave back (it could not start it there) goes to another
//! node when there is one that can take it.

use std::collections::{BTreeMap, BTreeSet};

/// A node as placement sees it.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Its ID.
    pub id: String,
    /// Declared cores (at least 1 is assumed).
    pub cores: u32,
    /// Draining: it takes no job.
    pub draining: bool,
    /// Declared memory in MiB; `None`: not declared, no limit.
    pub memory_mb: Option<u64>,
}

/// A job that should run, as placement sees it.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The job.
    pub job: String,
    /// Its weight.
    pub weight: u32,
    /// The memory it needs, in MiB (0: unknown, fits anywhere).
    pub memory_mb: u64,
    /// The node that owns it now, if any (alive or not).
    pub owner: Option<String>,
    /// The node that gave it back, if any: any other is preferred.
    pub left: Option<String>,
}

/// What placement decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Planned {
    /// Jobs to (re)assign, each with its new node.
    pub placed: Vec<(String, String)>,
    /// Jobs no node can take now, each with why.
    pub waiting: Vec<(String, String)>,
}

/// The jobs to (re)assign, each with its new node: those whose owner is
/// missing or not among `nodes`. Jobs with a live owner stay put (moving a
/// running job costs a restore; a drain moves them explicitly).
pub fn plan(nodes: &[Placement], jobs: &[Assignment]) -> Planned {
    let alive: BTreeSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    // Per node: its weight, and the memory its jobs need.
    let mut load: BTreeMap<&str, (u64, u64)> =
        nodes.iter().map(|n| (n.id.as_str(), (0, 0))).collect();
    for j in jobs {
        if let Some(o) = j.owner.as_deref()
            && let Some((w, m)) = load.get_mut(o)
        {
            *w += u64::from(j.weight.max(1));
            *m += j.memory_mb;
        }
    }
    let mut out = Planned::default();
    let mut orphans: Vec<&Assignment> = jobs
        .iter()
        .filter(|j| !j.owner.as_deref().is_some_and(|o| alive.contains(o)))
        .collect();
    // Heaviest first, then by name: the same input places the same way.
    orphans.sort_by(|a, b| {
        (b.weight, b.memory_mb)
            .cmp(&(a.weight, a.memory_mb))
            .then(a.job.cmp(&b.job))
    });
    for j in orphans {
        let w = u64::from(j.weight.max(1));
        let fits = |n: &Placement| {
            n.memory_mb
                .is_none_or(|cap| load[n.id.as_str()].1 + j.memory_mb <= cap)
        };
        let open: Vec<&Placement> = nodes.iter().filter(|n| !n.draining && fits(n)).collect();
        let elsewhere = open.iter().any(|n| Some(&n.id) != j.left.as_ref());
        let best = open
            .into_iter()
            .filter(|n| !elsewhere || Some(&n.id) != j.left.as_ref())
            .min_by(|a, b| {
                // (load + w) / cores, compared without division.
                let la = (load[a.id.as_str()].0 + w) * u64::from(b.cores.max(1));
                let lb = (load[b.id.as_str()].0 + w) * u64::from(a.cores.max(1));
                la.cmp(&lb).then(a.id.cmp(&b.id))
            });
        match best {
            Some(n) => {
                if let Some((lw, lm)) = load.get_mut(n.id.as_str()) {
                    *lw += w;
                    *lm += j.memory_mb;
                }
                out.placed.push((j.job.clone(), n.id.clone()));
            }
            None => out
                .waiting
                .push((j.job.clone(), why_waiting(nodes, &load, j))),
        }
    }
    out
}

/// Why no node takes `j`, in the user's words.
fn why_waiting(nodes: &[Placement], load: &BTreeMap<&str, (u64, u64)>, j: &Assignment) -> String {
    let open: Vec<&Placement> = nodes.iter().filter(|n| !n.draining).collect();
    if open.is_empty() {
        return if nodes.is_empty() {
            "no live node in the fleet; start a wrun serve --cluster node".into()
        } else {
            "every live node is draining; start another node".into()
        };
    }
    let most = open
        .iter()
        .filter_map(|n| Some((n, n.memory_mb? - load[n.id.as_str()].1.min(n.memory_mb?))))
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.id.cmp(&a.0.id)));
    match most {
        Some((n, free)) => format!(
            "needs {} MiB of memory (limits.memory-mb × its operator subtasks); the most any node has free is {free} MiB, on {} (--memory-mb {}): lower limits.memory-mb or the parallelism, or add a node",
            j.memory_mb,
            n.id,
            n.memory_mb.unwrap_or(0)
        ),
        None => "no node can take it".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, cores: u32, draining: bool) -> Placement {
        Placement {
            id: id.into(),
            cores,
            draining,
            memory_mb: None,
        }
    }

    fn job(name: &str, weight: u32, owner: Option<&str>) -> Assignment {
        Assignment {
            job: name.into(),
            weight,
            memory_mb: 0,
            owner: owner.map(String::from),
            left: None,
        }
    }

    #[test]
    fn jobs_spread_by_count_on_equal_nodes() {
        let nodes = [
            node("a", 1, false),
            node("b", 1, false),
            node("c", 1, false),
        ];
        let jobs: Vec<_> = (0..6).map(|i| job(&format!("j{i}"), 1, None)).collect();
        let p = plan(&nodes, &jobs).placed;
        let mut per: BTreeMap<String, usize> = BTreeMap::new();
        for (_, n) in &p {
            *per.entry(n.clone()).or_default() += 1;
        }
        assert_eq!(per.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
    }

    #[test]
    fn a_dead_owners_jobs_move_and_live_ones_stay() {
        let nodes = [node("a", 1, false), node("b", 1, false)];
        let jobs = [
            job("x", 1, Some("a")),
            job("y", 1, Some("gone")),
            job("z", 1, None),
        ];
        let p = plan(&nodes, &jobs).placed;
        assert_eq!(
            p,
            vec![
                ("y".to_string(), "b".to_string()),
                ("z".to_string(), "a".to_string())
            ],
            "x stays on a; y, then z, go where the load is lowest"
        );
    }

    #[test]
    fn draining_nodes_take_nothing_and_cores_weigh() {
        let nodes = [
            node("a", 8, false),
            node("b", 1, false),
            node("c", 64, true),
        ];
        let jobs: Vec<_> = (0..4).map(|i| job(&format!("j{i}"), 2, None)).collect();
        let p = plan(&nodes, &jobs).placed;
        assert!(p.iter().all(|(_, n)| n == "a"), "{p:?}");
        let none = plan(&[node("c", 1, true)], &jobs);
        assert!(none.placed.is_empty(), "no node can take them");
        assert!(none.waiting[0].1.contains("draining"), "{none:?}");
    }

    #[test]
    fn a_job_given_back_goes_elsewhere_when_it_can() {
        let back = |left: &str| Assignment {
            left: Some(left.into()),
            ..job("j", 1, None)
        };
        let two = [node("a", 1, false), node("b", 1, false)];
        assert_eq!(
            plan(&two, &[back("a")]).placed,
            vec![("j".into(), "b".into())]
        );
        // The only node there is takes it again.
        let one = [node("a", 1, false)];
        assert_eq!(
            plan(&one, &[back("a")]).placed,
            vec![("j".into(), "a".into())]
        );
    }

    #[test]
    fn memory_limits_what_a_node_takes_and_says_why_a_job_waits() {
        let mem = |id: &str, mb| Placement {
            memory_mb: Some(mb),
            ..node(id, 2, false)
        };
        let need = |name: &str, mb, owner: Option<&str>| Assignment {
            memory_mb: mb,
            ..job(name, 1, owner)
        };
        // a has 1 GiB with 768 MiB taken; b has 4 GiB, free.
        let nodes = [mem("a", 1024), mem("b", 4096)];
        let jobs = [
            need("big", 768, Some("a")),
            need("x", 512, None),
            need("y", 200, None),
        ];
        let p = plan(&nodes, &jobs);
        assert_eq!(
            p.placed,
            vec![("x".into(), "b".into()), ("y".into(), "a".into())],
            "x does not fit on a; y does, and a and b are then equally loaded (the lower ID wins)"
        );
        // Nothing has room for 8 GiB: it waits, and the reason names the
        // need and the roomiest node.
        let p = plan(&nodes, &[need("huge", 8192, None)]);
        assert!(p.placed.is_empty());
        let (job, why) = &p.waiting[0];
        assert_eq!(job, "huge");
        assert!(
            why.contains("8192 MiB") && why.contains("free is 4096 MiB, on b"),
            "{why}"
        );
        // A node that declares no memory takes anything.
        let p = plan(&[node("c", 1, false)], &[need("huge", 8192, None)]);
        assert_eq!(p.placed, vec![("huge".into(), "c".into())]);
    }
}
