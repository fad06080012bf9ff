//! A compact copy of a trained `extended-isolation-forest` forest, for
//! scoring and storage.
//!
//! The crate keeps each tree as boxed nodes holding two `[f64; N]` vectors
//! (about 3 MB for 100 trees of 256 samples, and a pointer chase per
//! level). An axis-parallel forest (extension level 0, the default) needs
//! one feature index and one threshold per node, and because [`Scaler`]
//! puts every scored value on a grid of `GRID` standard deviations, the
//! threshold can be an integer number of grid steps. A node is 8 bytes; a
//! model about 300 KB in memory and in the `models` table.
//!
//! The compact forest gives *exactly* the crate's score (same path lengths,
//! summed in the same order, tested bit for bit): it is a representation,
//! not another model. Forests with oblique cuts (extension level > 0) have
//! no compact form and are scored by the crate itself.
//!
//! [`Scaler`]: crate::model::Scaler

use std::sync::OnceLock;

use extended_isolation_forest::{Forest, Node as CrateNode};
use serde::{Deserialize, Serialize};

use crate::model::GRID;

/// A node: internal (`feature < LEAF`) or leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Node {
    /// Internal: the grid threshold. Leaf: the number of training samples
    /// that reached it.
    value: i32,
    /// Internal: index of the right child (the left child is the next
    /// node). Leaf: depth.
    link: u16,
    /// Internal: the feature split on. [`LEAF`] for a leaf.
    feature: u8,
    /// Internal: 0 when a point goes left iff `k <= value`, 1 when it goes
    /// left iff `k > value` (a negative normal in the crate's cut).
    flip: u8,
}

const LEAF: u8 = u8::MAX;

/// Points scored side by side in [`CompactForest::score_many`].
const LANES: usize = 8;

/// One forest, trees stored one after another in pre-order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactForest<const N: usize> {
    /// The crate's `c(sample_size)`.
    avg_path_length_c: f64,
    /// Index of each tree's root in `nodes`.
    roots: Vec<u32>,
    nodes: Vec<Node>,
}

/// Why a crate forest has no compact form.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CompactError {
    #[error("cannot read the forest: {0}")]
    Codec(String),
    #[error("the forest has oblique cuts (extension level above 0)")]
    Oblique,
    #[error("a tree has more nodes than a compact forest holds")]
    TooLarge,
}

/// The crate's path length of a leaf holding `n` samples reached at
/// `depth`, computed as the crate's recursion does (`1.0 + (1.0 + ... +
/// c(n))`), so that sums match to the last bit.
fn leaf_path_length(depth: u16, n: i32) -> f64 {
    const MAX_DEPTH: usize = 16;
    const MAX_N: usize = 512;
    static TABLE: OnceLock<Vec<f64>> = OnceLock::new();
    let compute = |depth: usize, n: usize| {
        let mut v = if n <= 1 { 0.0 } else { c_factor(n) };
        for _ in 0..depth {
            v += 1.0;
        }
        v
    };
    let (d, n) = (usize::from(depth), usize::try_from(n).unwrap_or(0));
    if d < MAX_DEPTH && n < MAX_N {
        let table = TABLE.get_or_init(|| {
            (0..MAX_DEPTH)
                .flat_map(|d| (0..MAX_N).map(move |n| (d, n)))
                .map(|(d, n)| compute(d, n))
                .collect()
        });
        table[d * MAX_N + n]
    } else {
        compute(d, n)
    }
}

/// The crate's `c(n)`: average path length of an unsuccessful search in a
/// binary search tree of `n` points.
fn c_factor(n: usize) -> f64 {
    let n = n as f64;
    2.0 * ((n - 1.0).ln() + 0.5772156649) - (2.0 * (n - 1.0) / n)
}

/// The largest `k` with `k * GRID <= p` (`below = false`) or `k * GRID < p`
/// (`below = true`), saturated to `i32`.
fn grid_threshold(p: f64, strict: bool) -> i32 {
    let holds = |k: i64| {
        let x = k as f64 * GRID;
        if strict {
            x < p
        } else {
            x <= p
        }
    };
    // Truncation, then the loops below settle the last step either way (a
    // single instruction, where `f64::floor` is a libm call).
    let mut k = (p / GRID).clamp(i32::MIN as f64, i32::MAX as f64) as i64;
    while k < i64::from(i32::MAX) && holds(k + 1) {
        k += 1;
    }
    while k > i64::from(i32::MIN) && !holds(k) {
        k -= 1;
    }
    k as i32
}

impl<const N: usize> CompactForest<N> {
    /// The compact form of a forest serialised by the crate (postcard), as
    /// models were stored before the compact form.
    pub fn from_crate_bytes(bytes: &[u8]) -> Result<CompactForest<N>, CompactError> {
        let forest: Forest<f64, N> =
            postcard::from_bytes(bytes).map_err(|e| CompactError::Codec(e.to_string()))?;
        CompactForest::from_forest(&forest)
    }

    /// The compact form of a trained forest.
    pub fn from_forest(forest: &Forest<f64, N>) -> Result<CompactForest<N>, CompactError> {
        CompactForest::from_forest_without(forest, &[false; N])
    }

    /// The compact form of a forest trained with the features where
    /// `ignored` is true held at 0, for points that hold them at 0 too (as
    /// `Scaler::steps` does). A cut on such a feature sends every training
    /// sample and every such point left, so it is dropped with its empty
    /// right leaf; the depths below keep counting it, so the score is
    /// unchanged to the last bit. About a quarter of the nodes when `hour`
    /// and `weekday` are left out.
    pub fn from_forest_without(
        forest: &Forest<f64, N>,
        ignored: &[bool; N],
    ) -> Result<CompactForest<N>, CompactError> {
        let mut out = CompactForest {
            avg_path_length_c: forest.avg_path_length_c(),
            roots: Vec::new(),
            nodes: Vec::new(),
        };
        for root in forest.roots() {
            let start = out.nodes.len();
            out.roots
                .push(u32::try_from(start).map_err(|_| CompactError::TooLarge)?);
            out.push(root, 0, start, ignored)?;
        }
        Ok(out)
    }

    fn push(
        &mut self,
        node: &CrateNode<f64, N>,
        depth: u16,
        tree_start: usize,
        ignored: &[bool; N],
    ) -> Result<(), CompactError> {
        match node {
            CrateNode::Ex(ex) => {
                self.nodes.push(Node {
                    value: i32::try_from(ex.num_samples).unwrap_or(i32::MAX),
                    link: depth,
                    feature: LEAF,
                    flip: 0,
                });
                Ok(())
            }
            CrateNode::In(inner) => {
                let mut used = (0..N).filter(|&i| inner.n[i] != 0.0);
                // The crate: left iff sum_i (x_i - p_i) * n_i <= 0.
                let (feature, value, flip) = match (used.next(), used.next()) {
                    // A zero normal sends everything left.
                    (None, _) => (0, i32::MAX, 0),
                    // n > 0: left iff x <= p. n < 0: left iff x >= p, that
                    // is iff not x < p.
                    (Some(q), None) if inner.n[q] > 0.0 => {
                        (q, grid_threshold(inner.p[q], false), 0)
                    }
                    (Some(q), None) => (q, grid_threshold(inner.p[q], true), 1),
                    (Some(_), Some(_)) => return Err(CompactError::Oblique),
                };
                if ignored[feature] {
                    // Held at 0 in training and scoring: everything goes left.
                    return self.push(&inner.left, depth + 1, tree_start, ignored);
                }
                let at = self.nodes.len();
                self.nodes.push(Node {
                    value,
                    link: 0,
                    feature: u8::try_from(feature).map_err(|_| CompactError::TooLarge)?,
                    flip,
                });
                self.push(&inner.left, depth + 1, tree_start, ignored)?;
                let right = u16::try_from(self.nodes.len() - tree_start)
                    .map_err(|_| CompactError::TooLarge)?;
                self.nodes[at].link = right;
                self.push(&inner.right, depth + 1, tree_start, ignored)
            }
        }
    }

    /// The crate's score `2^(-E(h)/c)` of a point given in grid steps
    /// (`round(z / GRID)`, saturated to `i32`).
    pub fn score(&self, k: &[i32; N]) -> f64 {
        let path_length: f64 = self
            .roots
            .iter()
            .map(|&root| {
                let base = root as usize;
                let mut i = base;
                loop {
                    let node = self.nodes[i];
                    if node.feature == LEAF {
                        break leaf_path_length(node.link, node.value);
                    }
                    let x = k[usize::from(node.feature)];
                    let left = (x <= node.value) != (node.flip == 1);
                    i = if left {
                        i + 1
                    } else {
                        base + usize::from(node.link)
                    };
                }
            })
            .sum();
        let eh = path_length / self.roots.len() as f64;
        2.0_f64.powf(-eh / self.avg_path_length_c)
    }

    /// [`CompactForest::score`] of many points, equal to calling it on each
    /// (same sums, same order) and about three times faster: the points go
    /// down each tree [`LANES`] at a time, so the memory loads of one do
    /// not wait for another's.
    pub fn score_many(&self, points: &[[i32; N]]) -> Vec<f64> {
        let mut out = Vec::with_capacity(points.len());
        for chunk in points.chunks(LANES) {
            let mut path = [0.0_f64; LANES];
            for &root in &self.roots {
                let base = root as usize;
                let mut at = [base; LANES];
                let mut leaf = [false; LANES];
                loop {
                    let mut moving = false;
                    for (j, k) in chunk.iter().enumerate() {
                        if leaf[j] {
                            continue;
                        }
                        let node = self.nodes[at[j]];
                        if node.feature == LEAF {
                            leaf[j] = true;
                            path[j] += leaf_path_length(node.link, node.value);
                            continue;
                        }
                        moving = true;
                        let x = k[usize::from(node.feature)];
                        let left = (x <= node.value) != (node.flip == 1);
                        at[j] = if left {
                            at[j] + 1
                        } else {
                            base + usize::from(node.link)
                        };
                    }
                    if !moving {
                        break;
                    }
                }
            }
            let trees = self.roots.len() as f64;
            out.extend(
                path[..chunk.len()]
                    .iter()
                    .map(|p| 2.0_f64.powf(-(p / trees) / self.avg_path_length_c)),
            );
        }
        out
    }

    /// Number of nodes (memory is 8 bytes a node).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Checks a decoded forest before it is scored: indices in range.
    pub fn validate(&self) -> Result<(), CompactError> {
        let bad = || CompactError::Codec("node index out of range".into());
        if self.roots.is_empty() || !self.avg_path_length_c.is_finite() {
            return Err(CompactError::Codec("empty forest".into()));
        }
        for (t, &root) in self.roots.iter().enumerate() {
            let start = root as usize;
            let end = self
                .roots
                .get(t + 1)
                .map_or(self.nodes.len(), |&r| r as usize);
            if start >= end || end > self.nodes.len() {
                return Err(bad());
            }
            for i in start..end {
                let n = self.nodes[i];
                if n.feature == LEAF {
                    continue;
                }
                let right = start + usize::from(n.link);
                if usize::from(n.feature) >= N || i + 1 >= end || right <= i + 1 || right >= end {
                    return Err(bad());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use extended_isolation_forest::ForestOptions;

    fn rows(n: usize, seed: u64) -> Vec<[f64; 4]> {
        let mut s = seed.max(1);
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 1_000_000) as f64 / 1_000_000.0
        };
        (0..n)
            .map(|_| {
                let a = next() * 4.0 - 2.0;
                [
                    a,
                    a * a + next(),
                    -3.0 + next() * 0.01,
                    (next() * 6.0).round() - 3.0,
                ]
            })
            .map(|r| r.map(|v| (v / GRID).round() * GRID))
            .collect()
    }

    /// A crate forest of `trees` trees of `samples` samples.
    fn train(data: &[[f64; 4]], trees: usize, samples: usize, extension: usize) -> Forest<f64, 4> {
        let options = ForestOptions {
            n_trees: trees,
            sample_size: samples,
            max_tree_depth: None,
            extension_level: extension,
        };
        Forest::from_slice(data, &options).unwrap()
    }

    fn grid(x: &[f64; 4]) -> [i32; 4] {
        x.map(|v| (v / GRID).round() as i32)
    }

    #[test]
    fn grid_thresholds_agree_with_float_comparisons() {
        for p in [
            0.0,
            1e-4,
            -1e-4,
            0.00015,
            -0.00015,
            2.5,
            -2.50005,
            123.4567891,
        ] {
            let le = grid_threshold(p, false);
            let lt = grid_threshold(p, true);
            for k in [le - 1, le, le + 1, lt - 1, lt, lt + 1] {
                let x = k as f64 * GRID;
                assert_eq!(x <= p, k <= le, "p {p} k {k}");
                assert_eq!(x < p, k <= lt, "p {p} k {k}");
            }
        }
    }

    #[test]
    fn the_compact_forest_scores_exactly_as_the_crate() {
        let data = rows(2000, 42);
        let forest = train(&data, 100, 256, 0);
        let compact = CompactForest::<4>::from_forest(&forest).unwrap();
        compact.validate().unwrap();
        let bytes = postcard::to_stdvec(&forest).unwrap();
        assert_eq!(
            CompactForest::<4>::from_crate_bytes(&bytes),
            Ok(compact.clone())
        );
        // Training rows, new rows, and points far outside the range.
        let mut probes = rows(500, 7);
        probes.extend(data.iter().take(500).copied());
        probes.push([50.0, -50.0, 0.0, 9.0]);
        probes.push([-2.0, 0.0, -3.0, -3.0]);
        for x in &probes {
            assert_eq!(compact.score(&grid(x)), forest.score(x), "at {x:?}");
        }
        let steps: Vec<[i32; 4]> = probes.iter().map(grid).collect();
        let many = compact.score_many(&steps);
        assert_eq!(many.len(), probes.len());
        for (x, s) in probes.iter().zip(many) {
            assert_eq!(s, forest.score(x), "at {x:?}");
        }
        // About 8 bytes a node, far below the crate's ~150.
        assert!(compact.node_count() < 100 * 511);
        assert_eq!(std::mem::size_of::<Node>(), 8);
    }

    #[test]
    fn cuts_on_ignored_features_are_dropped_and_scores_stay_exact() {
        // Feature 3 held at 0, as an ignored feature is.
        let data: Vec<[f64; 4]> = rows(2000, 21)
            .into_iter()
            .map(|[a, b, c, _]| [a, b, c, 0.0])
            .collect();
        let forest = train(&data, 100, 256, 0);
        let full = CompactForest::<4>::from_forest(&forest).unwrap();
        let lean =
            CompactForest::<4>::from_forest_without(&forest, &[false, false, false, true]).unwrap();
        lean.validate().unwrap();
        assert!(
            lean.node_count() * 10 < full.node_count() * 9,
            "{} of {} nodes",
            lean.node_count(),
            full.node_count()
        );
        let mut probes: Vec<[f64; 4]> = rows(300, 8)
            .into_iter()
            .map(|[a, b, c, _]| [a, b, c, 0.0])
            .collect();
        probes.extend(data.iter().take(300).copied());
        probes.push([40.0, -40.0, 3.0, 0.0]);
        let steps: Vec<[i32; 4]> = probes.iter().map(grid).collect();
        for (x, k) in probes.iter().zip(&steps) {
            assert_eq!(lean.score(k), forest.score(x), "at {x:?}");
        }
        for (x, s) in probes.iter().zip(lean.score_many(&steps)) {
            assert_eq!(s, forest.score(x), "at {x:?}");
        }
    }

    #[test]
    fn oblique_forests_have_no_compact_form_and_garbage_is_refused() {
        let data = rows(300, 3);
        let forest = train(&data, 10, 64, 2);
        let bytes = postcard::to_stdvec(&forest).unwrap();
        assert_eq!(
            CompactForest::<4>::from_crate_bytes(&bytes),
            Err(CompactError::Oblique)
        );
        assert!(matches!(
            CompactForest::<4>::from_crate_bytes(&bytes[..bytes.len() / 2]),
            Err(CompactError::Codec(_))
        ));
    }

    #[test]
    fn validation_refuses_out_of_range_links() {
        let data = rows(300, 5);
        let forest = train(&data, 3, 64, 0);
        let bytes = postcard::to_stdvec(&forest).unwrap();
        let mut compact = CompactForest::<4>::from_crate_bytes(&bytes).unwrap();
        compact.validate().unwrap();
        let inner = compact
            .nodes
            .iter()
            .position(|n| n.feature != LEAF)
            .unwrap();
        compact.nodes[inner].link = u16::MAX;
        assert!(compact.validate().is_err());
    }
}
