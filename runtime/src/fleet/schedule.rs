//! Placement, as a plain function: which node each job without a live
//! owner goes to. The scheduler node calls it on every change it sees and
//! writes what it returns; nothing here talks to etcd.
//!
//! A job weighs its parallelism (the default given at deploy, 1 without);
//! a node's load is the weight of the jobs it owns divided by the cores it
//! declares. Each job goes to the live, non-draining node whose load after
//! taking it is lowest (ties: the lower node ID), so jobs spread by count
//! on equal nodes and by cores on unequal ones.

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
}

/// A job that should run, as placement sees it.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The job.
    pub job: String,
    /// Its weight.
    pub weight: u32,
    /// The node that owns it now, if any (alive or not).
    pub owner: Option<String>,
}

/// The jobs to (re)assign, each with its new node: those whose owner is
/// missing or not among `nodes`. Jobs with a live owner stay put (moving a
/// running job costs a restore; a drain moves them explicitly).
pub fn plan(nodes: &[Placement], jobs: &[Assignment]) -> Vec<(String, String)> {
    let alive: BTreeSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    let mut load: BTreeMap<&str, u64> = nodes.iter().map(|n| (n.id.as_str(), 0)).collect();
    for j in jobs {
        if let Some(o) = j.owner.as_deref()
            && let Some(l) = load.get_mut(o)
        {
            *l += u64::from(j.weight.max(1));
        }
    }
    let mut out = Vec::new();
    let mut orphans: Vec<&Assignment> = jobs
        .iter()
        .filter(|j| !j.owner.as_deref().is_some_and(|o| alive.contains(o)))
        .collect();
    // Heaviest first, then by name: the same input places the same way.
    orphans.sort_by(|a, b| b.weight.cmp(&a.weight).then(a.job.cmp(&b.job)));
    for j in orphans {
        let w = u64::from(j.weight.max(1));
        let best = nodes.iter().filter(|n| !n.draining).min_by(|a, b| {
            // (load + w) / cores, compared without division.
            let la = (load[a.id.as_str()] + w) * u64::from(b.cores.max(1));
            let lb = (load[b.id.as_str()] + w) * u64::from(a.cores.max(1));
            la.cmp(&lb).then(a.id.cmp(&b.id))
        });
        if let Some(n) = best {
            *load.get_mut(n.id.as_str()).unwrap_or(&mut 0) += w;
            out.push((j.job.clone(), n.id.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, cores: u32, draining: bool) -> Placement {
        Placement {
            id: id.into(),
            cores,
            draining,
        }
    }

    fn job(name: &str, weight: u32, owner: Option<&str>) -> Assignment {
        Assignment {
            job: name.into(),
            weight,
            owner: owner.map(String::from),
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
        let p = plan(&nodes, &jobs);
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
        let p = plan(&nodes, &jobs);
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
        let p = plan(&nodes, &jobs);
        assert!(p.iter().all(|(_, n)| n == "a"), "{p:?}");
        assert!(
            plan(&[node("c", 1, true)], &jobs).is_empty(),
            "no node can take them"
        );
    }
}
