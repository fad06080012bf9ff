//! # Extended Isolation Forest
//!
//! This is a rust port of the anomaly detection algorithm described in [Extended Isolation Forest](https://doi.org/10.1109/TKDE.2019.2947676)
//! and implemented in [https://github.com/sahandha/eif](https://github.com/sahandha/eif). For a detailed description see the paper or the
//! github repository.
//!
//! This crate requires rust >= 1.51 as it makes use of `min_const_generics`.
//!
//! Includes optional serde support with the `serde` feature.
//!
//! ## Example
//!
//! ```rust
//! use rand::distributions::Uniform;
//! use rand::Rng;
//! use extended_isolation_forest::{Forest, ForestOptions};
//!
//! fn make_f64_forest() -> Forest<f64, 3> {
//!     let rng = &mut rand::thread_rng();
//!     let distribution = Uniform::new(-4., 4.);
//!     let distribution2 = Uniform::new(10., 50.);
//!     let values: Vec<_> = (0..3000)
//!         .map(|_| [rng.sample(distribution), rng.sample(distribution), rng.sample(distribution2)])
//!         .collect();
//!
//!     let options = ForestOptions {
//!         n_trees: 150,
//!         sample_size: 200,
//!         max_tree_depth: None,
//!         extension_level: 1,
//!     };
//!     Forest::from_slice(values.as_slice(), &options).unwrap()
//! }
//!
//! fn main() {
//!     let forest = make_f64_forest();
//!
//!     // no anomaly
//!     assert!(forest.score(&[1.0, 3.0, 25.0]) < 0.5);
//!     assert!(forest.score(&[-1.0, 3.0, 25.0]) < 0.5);
//!
//!     // anomalies
//!     assert!(forest.score(&[-12.0, 6.0, 25.0]) > 0.5);
//!     assert!(forest.score(&[-1.0, 2.0, 60.0]) > 0.5);
//!     assert!(forest.score(&[-1.0, 2.0, 0.0]) > 0.5);
//! }
//! ```

use std::boxed::Box;
use std::result::Result;

use num_traits::{Float, FloatConst};
use rand::{
    distributions::uniform::SampleUniform,
    seq::{IteratorRandom, SliceRandom},
    Rng, SeedableRng,
};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

pub use crate::error::Error;

mod error;
#[cfg(feature = "serde")]
mod serde_array;

#[cfg(not(feature = "serde"))]
pub trait ForestFloat<'de>: Float {}

#[cfg(feature = "serde")]
pub trait ForestFloat<'de>: Float + Serialize + Deserialize<'de> {}

impl<'de> ForestFloat<'de> for f32 {}
impl<'de> ForestFloat<'de> for f64 {}

#[derive(Clone, Eq, PartialEq)]
pub struct ForestOptions {
    /// `n_trees` is the number of trees to be created.
    pub n_trees: usize,

    /// `sample_size` is the number of samples of the training data to be used in
    /// creation of each tree. Must be smaller than `training_data.len()`.
    pub sample_size: usize,

    /// `max_tree_depth` is the max. allowed tree depth. This is by default set to average
    /// length of an unsuccessful search in a binary tree.
    pub max_tree_depth: Option<usize>,

    /// `extension_level` specifies degree of freedom in choosing the hyperplanes for dividing up
    /// data. Must be smaller than the dimension n of the dataset.
    pub extension_level: usize,
}

impl Default for ForestOptions {
    fn default() -> Self {
        Self {
            n_trees: 20,
            sample_size: 20,
            max_tree_depth: None,
            extension_level: 0,
        }
    }
}

#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Forest<T, const N: usize> {
    /// Multiplicative factor used in computing the anomaly scores.
    avg_path_length_c: f64,

    trees: Box<[Tree<T, N>]>,
}

impl<'de, T, const N: usize> Forest<T, N>
where
    T: ForestFloat<'de> + SampleUniform + Default,
    StandardNormal: Distribution<T>,
{
    /// Build a new forest from the given training data
    pub fn from_slice(training_data: &[[T; N]], options: &ForestOptions) -> Result<Self, Error> {
        Self::from_slice_with_rng(training_data, options, &mut rand::thread_rng())
    }

    /// Patched (see PATCHES.md): [`Forest::from_slice`] drawing from a
    /// ChaCha8 generator seeded with `seed`: the same data, options and
    /// seed give the same forest, on every platform (rand_chacha's streams
    /// are value-stable).
    pub fn from_slice_seeded(
        training_data: &[[T; N]],
        options: &ForestOptions,
        seed: u64,
    ) -> Result<Self, Error> {
        Self::from_slice_with_rng(training_data, options, &mut ChaCha8Rng::seed_from_u64(seed))
    }

    /// Patched (see PATCHES.md): [`Forest::from_slice`] drawing every
    /// random number (the trees' subsamples, cut dimensions, normals and
    /// split points) from `rng`, in a fixed order.
    pub fn from_slice_with_rng<R: Rng + ?Sized>(
        training_data: &[[T; N]],
        options: &ForestOptions,
        rng: &mut R,
    ) -> Result<Self, Error> {
        if training_data.len() < options.sample_size || N == 0 {
            return Err(Error::InsufficientTrainingData);
        } else if options.extension_level > (N - 1) {
            return Err(Error::ExtensionLevelExceedsDimensions);
        }

        let max_tree_depth = if let Some(mdt) = options.max_tree_depth {
            mdt
        } else {
            (options.sample_size as f64).log2().ceil() as usize
        };

        // build the trees
        let trees = (0..options.n_trees)
            .map(|_| {
                let mut tree_sample: Vec<_> = training_data
                    .choose_multiple(rng, options.sample_size)
                    .into_iter()
                    .collect();

                Tree::new(
                    tree_sample.as_mut_slice(),
                    rng,
                    max_tree_depth,
                    options.extension_level,
                )
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();

        Ok(Self {
            avg_path_length_c: c_factor(options.sample_size),
            trees,
        })
    }

    /// compute anomaly score for an item
    /// Patched (see PATCHES.md): the average path length normalisation
    /// `c(sample_size)` of [`Forest::score`].
    pub fn avg_path_length_c(&self) -> f64 {
        self.avg_path_length_c
    }

    /// Patched (see PATCHES.md): the root of each trained tree, read-only,
    /// so that a forest can be copied into another representation.
    pub fn roots(&self) -> impl Iterator<Item = &Node<T, N>> {
        self.trees.iter().map(|t| &t.root)
    }

    pub fn score(&self, values: &[T; N]) -> f64 {
        let path_length: f64 = self.trees.iter().map(|tree| tree.path_length(values)).sum();

        // Average of path length travelled by the point in all trees.
        let eh = path_length / self.trees.len() as f64;

        // Anomaly Score
        2.0_f64.powf(-eh / self.avg_path_length_c)
    }
}

#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub enum Node<T, const N: usize> {
    Ex(ExNode),
    In(InNode<T, N>),
}

#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct InNode<T, const N: usize> {
    /// Left child node.
    pub left: Box<Node<T, N>>,

    /// Right child node.
    pub right: Box<Node<T, N>>,

    /// Normal vector at the root of this tree, which is used in
    /// creating hyperplanes for splitting criteria
    #[cfg_attr(feature = "serde", serde(with = "serde_array"))]
    pub n: [T; N],

    /// Intercept point through which the hyperplane passes.
    #[cfg_attr(feature = "serde", serde(with = "serde_array"))]
    pub p: [T; N],
}

#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct ExNode {
    /// Size of the dataset present at the node.
    pub num_samples: usize,
}

#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
struct Tree<T, const N: usize> {
    root: Node<T, N>,
}

impl<'de, T, const N: usize> Tree<T, N>
where
    T: ForestFloat<'de> + SampleUniform + Default,
    StandardNormal: Distribution<T>,
{
    pub fn new<R: Rng + ?Sized>(
        samples: &mut [&[T; N]],
        rng: &mut R,
        max_tree_depth: usize,
        extension_level: usize,
    ) -> Self {
        Self {
            root: make_node(samples, rng, 0, max_tree_depth, extension_level),
        }
    }

    /// length of the path traversed by the point on the tree when it reaches an external node.
    pub fn path_length(&self, values: &[T; N]) -> f64 {
        path_length_recurse(&self.root, values)
    }
}

fn path_length_recurse<T, const N: usize>(node: &Node<T, N>, values: &[T; N]) -> f64
where
    T: Float,
{
    match node {
        Node::Ex(ex_node) => {
            if ex_node.num_samples <= 1 {
                0.0
            } else {
                c_factor(ex_node.num_samples)
            }
        }
        Node::In(in_node) => {
            1.0 + path_length_recurse(
                match determinate_direction(values, &in_node.n, &in_node.p) {
                    Direction::Left => in_node.left.as_ref(),
                    Direction::Right => in_node.right.as_ref(),
                },
                values,
            )
        }
    }
}

fn make_node<'de, T, R: Rng + ?Sized, const N: usize>(
    samples: &mut [&[T; N]],
    rng: &mut R,
    current_tree_depth: usize,
    max_tree_depth: usize,
    extension_level: usize,
) -> Node<T, N>
where
    T: ForestFloat<'de> + SampleUniform + Default,
    StandardNormal: Distribution<T>,
{
    let num_samples = samples.len();
    if current_tree_depth >= max_tree_depth || num_samples <= 1 {
        Node::Ex(ExNode { num_samples })
    } else {
        // Patched (see PATCHES.md): the normal vector is drawn first, and a
        // split point is drawn only for the dimensions it uses, as
        // `min + u * (max - min)` with `u` uniform in [0, 1). Upstream draws
        // every dimension with rand 0.8's `Uniform::new(min, max)`, whose
        // constructor loops about `|min| / (max - min)` times
        // (rust-random/rand#1299): slow on narrow ranges, endless when the
        // values differ by a few ulps.
        // Patched: the `extension_level + 1` dimensions that keep a normal
        // component are chosen first (uniformly, as upstream's choice of the
        // `N - extension_level - 1` to zero), and normals are drawn for
        // those only; at extension level 0, one `gen_range` and one normal.
        let mut n = [T::zero(); N];
        if extension_level == 0 {
            n[rng.gen_range(0..N)] = rng.sample(StandardNormal);
        } else {
            for idx in (0..N).choose_multiple(rng, extension_level + 1) {
                n[idx] = rng.sample(StandardNormal);
            }
        }

        let p = {
            // Patched: the range of the dimensions the cut uses only.
            let mut maxs = *samples[0];
            let mut mins = *samples[0];
            for i in (0..N).filter(|&i| n[i] != T::zero()) {
                samples.iter().skip(1).for_each(|s| {
                    let v = s[i];
                    maxs[i] = if v > maxs[i] { v } else { maxs[i] };
                    mins[i] = if v < mins[i] { v } else { mins[i] };
                })
            }

            let mut p = [T::zero(); N];
            for i in 0..N {
                p[i] = if n[i] == T::zero() || mins[i] == maxs[i] {
                    mins[i]
                } else {
                    let u = T::from(rng.gen::<f64>()).unwrap_or_else(T::zero);
                    let v = mins[i] + u * (maxs[i] - mins[i]);
                    if v < maxs[i] {
                        v
                    } else {
                        mins[i]
                    }
                };
            }
            p
        };

        // Patched: the samples are partitioned in place (left ones first)
        // instead of being copied into two new lists at every node.
        // With one non-zero normal component (extension level 0) the side is
        // the sign of that one term: the others add only zeros.
        let mut used = (0..N).filter(|&i| n[i] != T::zero());
        let single = match (used.next(), used.next()) {
            (Some(q), None) => Some(q),
            _ => None,
        };
        let mut split = 0;
        for i in 0..samples.len() {
            let left = match single {
                Some(q) => (samples[i][q] - p[q]) * n[q] <= T::zero(),
                None => matches!(determinate_direction(samples[i], &n, &p), Direction::Left),
            };
            if left {
                samples.swap(i, split);
                split += 1;
            }
        }
        let (samples_left, samples_right) = samples.split_at_mut(split);

        Node::In(InNode {
            left: Box::new(make_node(
                samples_left,
                rng,
                current_tree_depth + 1,
                max_tree_depth,
                extension_level,
            )),
            right: Box::new(make_node(
                samples_right,
                rng,
                current_tree_depth + 1,
                max_tree_depth,
                extension_level,
            )),
            n,
            p,
        })
    }
}

/// Average path length of unsuccessful search in a binary search tree given n points
/// n: Number of data points for the BST.
///
/// Returns the average path length of unsuccessful search in a BST
fn c_factor(n: usize) -> f64 {
    2.0 * ((n as f64 - 1.0).log(f64::E()) + 0.5772156649) - (2.0 * (n as f64 - 1.0) / n as f64)
}

enum Direction {
    Left,
    Right,
}

fn determinate_direction<T, const N: usize>(sample: &[T; N], n: &[T; N], p: &[T; N]) -> Direction
where
    T: Float,
{
    let direction_value = sample
        .iter()
        .zip(p.iter())
        .map(|(sample_val, p_val)| *sample_val - *p_val)
        .zip(n.iter())
        .fold(T::zero(), |sum, (sp_val, n_val)| sum + sp_val * (*n_val));

    if direction_value <= T::zero() {
        Direction::Left
    } else {
        Direction::Right
    }
}

#[cfg(test)]
mod tests {
    use rand::distributions::Uniform;
    use rand::Rng;

    use crate::{Forest, ForestOptions};

    fn make_f64_forest() -> Forest<f64, 3> {
        let rng = &mut rand::thread_rng();
        let distribution = Uniform::new(-4., 4.);
        let distribution2 = Uniform::new(10., 50.);

        let values: Vec<_> = (0..6000)
            .map(|_| {
                [
                    rng.sample(distribution),
                    rng.sample(distribution),
                    rng.sample(distribution2),
                ]
            })
            .collect();

        let options = ForestOptions {
            n_trees: 150,
            sample_size: 200,
            max_tree_depth: None,
            extension_level: 1,
        };
        Forest::from_slice(values.as_slice(), &options).unwrap()
    }

    fn assert_anomalies_forest_3d_f64(forest: &Forest<f64, 3>) {
        // no anomaly
        assert!(forest.score(&[1.0, 3.0, 25.0]) < 0.5);
        assert!(forest.score(&[-1.0, 3.0, 25.0]) < 0.5);

        // anomalies
        assert!(forest.score(&[-12.0, 6.0, 25.0]) > 0.5);
        assert!(forest.score(&[-1.0, 2.0, 60.0]) > 0.5);
        assert!(forest.score(&[-1.0, 2.0, 0.0]) > 0.5);
    }

    #[test]
    fn score_forest_3d_f64() {
        let forest = make_f64_forest();
        assert_anomalies_forest_3d_f64(&forest);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serialize_forest_3d_f64() {
        let forest = make_f64_forest();
        let forest_json = serde_json::to_string(&forest).unwrap();
        let forest2 = serde_json::from_str(forest_json.as_str()).unwrap();
        assert_anomalies_forest_3d_f64(&forest2);
    }
}
