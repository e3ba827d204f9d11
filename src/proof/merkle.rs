//! The archive's Merkle log as RFC 6962 (and RFC 9162, section 2.1) defines it: a leaf's
//! hash is `SHA-256(0x00 || data)`, an interior node's `SHA-256(0x01 || left || right)`,
//! and the tree over `n` leaves splits at the largest power of two below `n`. Proofs are
//! the standard inclusion and consistency proofs, so any RFC 6962 verifier checks them.
//!
//! Why written here rather than taken from a crate: the crates that build such trees
//! (`ct-merkle`, `rs_merkle`) keep every leaf in memory, and the log's trees live in the
//! ledger, a million leaves and more. What the log stores is the hash of every *perfect*
//! subtree (`node(level, index)`, covering leaves `index << level .. (index + 1) << level`),
//! which never changes once complete; every hash a proof needs is such a node or is
//! folded from a few of them. So a proof is computed in two steps, both pure: [`needed`]
//! names the perfect subtrees to read, the caller reads them (one ledger query), and
//! [`inclusion_proof`] / [`consistency_proof`] fold them. Appending goes through a
//! [`CompactRange`], the tree's right edge (one node a set bit of the size), which yields
//! the new perfect nodes to store.
//!
//! Verification ([`verify_inclusion`], [`verify_consistency`]) follows RFC 9162's
//! algorithms step by step and shares nothing with the proof builder but the two hash
//! functions: a builder bug does not hide behind a verifier that makes the same mistake.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// A perfect subtree: `level` 0 is a leaf; covers leaves `index << level` onwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u32,
    pub index: u64,
}

impl NodeId {
    pub fn new(level: u32, index: u64) -> Self {
        Self { level, index }
    }
}

/// The hash of one leaf's data.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// The hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The perfect subtrees that make up leaves `lo..hi`, left to right.
fn perfect_parts(lo: u64, hi: u64, out: &mut Vec<NodeId>) {
    let n = hi - lo;
    if n.is_power_of_two() && lo.is_multiple_of(n) {
        out.push(NodeId::new(n.trailing_zeros(), lo >> n.trailing_zeros()));
    } else {
        let k = split(n);
        perfect_parts(lo, lo + k, out);
        perfect_parts(lo + k, hi, out);
    }
}

/// The hash of leaves `lo..hi` (`lo < hi`), folded from their perfect subtrees.
fn range_hash(lo: u64, hi: u64, nodes: &HashMap<NodeId, Hash>) -> Result<Hash, ProofError> {
    let n = hi - lo;
    if n.is_power_of_two() && lo.is_multiple_of(n) {
        let id = NodeId::new(n.trailing_zeros(), lo >> n.trailing_zeros());
        return nodes.get(&id).copied().ok_or(ProofError::Missing(id));
    }
    let k = split(n);
    Ok(node_hash(
        &range_hash(lo, lo + k, nodes)?,
        &range_hash(lo + k, hi, nodes)?,
    ))
}

/// The ranges whose hashes form the inclusion proof of leaf `index` in a tree of `size`
/// (RFC 6962's PATH), bottom first.
fn path_ranges(index: u64, lo: u64, hi: u64, out: &mut Vec<(u64, u64)>) {
    let n = hi - lo;
    if n <= 1 {
        return;
    }
    let k = split(n);
    if index - lo < k {
        path_ranges(index, lo, lo + k, out);
        out.push((lo + k, hi));
    } else {
        path_ranges(index, lo + k, hi, out);
        out.push((lo, lo + k));
    }
}

/// The ranges of the consistency proof from size `m` to the tree `lo..hi` (RFC 6962's
/// SUBPROOF), bottom first.
fn subproof_ranges(m: u64, lo: u64, hi: u64, whole: bool, out: &mut Vec<(u64, u64)>) {
    let n = hi - lo;
    if m == n {
        if !whole {
            out.push((lo, hi));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof_ranges(m, lo, lo + k, whole, out);
        out.push((lo + k, hi));
    } else {
        subproof_ranges(m - k, lo + k, hi, false, out);
        out.push((lo, lo + k));
    }
}

/// Why a proof cannot be given or does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf {index} is not in a tree of {size} leaves")]
    OutOfRange { index: u64, size: u64 },
    #[error("a tree of {old} leaves cannot be proved consistent with a smaller one of {new}")]
    Shrunk { old: u64, new: u64 },
    #[error(
        "the log lacks node {0:?}: the ledger's log is incomplete (run `callvault verify --manifests`)"
    )]
    Missing(NodeId),
    #[error("the proof has {found} hashes where {expected} are needed")]
    WrongLength { expected: usize, found: usize },
    #[error("the proof leads to root {found}, not to the checkpoint's {expected}")]
    RootMismatch { expected: String, found: String },
}

/// What a proof asks of the stored nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// Leaf `index` in the tree of `size`.
    Inclusion { index: u64, size: u64 },
    /// The tree of `old` leaves within the tree of `new`.
    Consistency { old: u64, new: u64 },
    /// The root of the tree of `size` leaves.
    Root { size: u64 },
}

impl Wanted {
    fn ranges(self) -> Result<Vec<(u64, u64)>, ProofError> {
        let mut out = Vec::new();
        match self {
            Self::Inclusion { index, size } => {
                if index >= size {
                    return Err(ProofError::OutOfRange { index, size });
                }
                path_ranges(index, 0, size, &mut out);
            }
            Self::Consistency { old, new } => {
                if old > new {
                    return Err(ProofError::Shrunk { old, new });
                }
                if old > 0 && old < new {
                    subproof_ranges(old, 0, new, true, &mut out);
                }
            }
            Self::Root { size } => {
                if size > 0 {
                    out.push((0, size));
                }
            }
        }
        Ok(out)
    }
}

/// The perfect subtrees to read for `wanted`, without duplicates.
pub fn needed(wanted: Wanted) -> Result<Vec<NodeId>, ProofError> {
    let mut ids = Vec::new();
    for (lo, hi) in wanted.ranges()? {
        perfect_parts(lo, hi, &mut ids);
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// The proof (or, for [`Wanted::Root`], the one root hash) folded from `nodes`, which must
/// hold at least [`needed`]`(wanted)`.
pub fn prove(wanted: Wanted, nodes: &HashMap<NodeId, Hash>) -> Result<Vec<Hash>, ProofError> {
    if let Wanted::Root { size: 0 } = wanted {
        return Ok(vec![empty_root()]);
    }
    wanted
        .ranges()?
        .into_iter()
        .map(|(lo, hi)| range_hash(lo, hi, nodes))
        .collect()
}

/// The inclusion proof of leaf `index` in the tree of `size`.
pub fn inclusion_proof(
    index: u64,
    size: u64,
    nodes: &HashMap<NodeId, Hash>,
) -> Result<Vec<Hash>, ProofError> {
    prove(Wanted::Inclusion { index, size }, nodes)
}

/// The consistency proof from the tree of `old` leaves to the tree of `new`.
pub fn consistency_proof(
    old: u64,
    new: u64,
    nodes: &HashMap<NodeId, Hash>,
) -> Result<Vec<Hash>, ProofError> {
    prove(Wanted::Consistency { old, new }, nodes)
}

fn mismatch(expected: &Hash, found: &Hash) -> ProofError {
    ProofError::RootMismatch {
        expected: hex::encode(expected),
        found: hex::encode(found),
    }
}

/// RFC 9162, 2.1.3.2: checks that `leaf` (a leaf hash) is leaf `index` of the tree of
/// `size` whose root is `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange { index, size });
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(ProofError::WrongLength {
                expected: proof.len() - 1,
                found: proof.len(),
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength {
            expected: proof.len() + 1,
            found: proof.len(),
        });
    }
    if &r != root {
        return Err(mismatch(root, &r));
    }
    Ok(())
}

/// RFC 9162, 2.1.4.2: checks that the tree of `old` leaves with root `old_root` is a
/// prefix of the tree of `new` leaves with root `new_root`.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::Shrunk { old, new });
    }
    if old == new || old == 0 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength {
                expected: 0,
                found: proof.len(),
            });
        }
        return if old == new && old_root != new_root {
            Err(mismatch(old_root, new_root))
        } else {
            Ok(())
        };
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if old.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError::WrongLength {
            expected: 1,
            found: 0,
        });
    };
    let (mut f_n, mut s_n) = (old - 1, new - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return Err(ProofError::WrongLength {
                expected: proof.len() - 1,
                found: proof.len(),
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength {
            expected: proof.len() + 1,
            found: proof.len(),
        });
    }
    if &fr != old_root {
        return Err(mismatch(old_root, &fr));
    }
    if &sr != new_root {
        return Err(mismatch(new_root, &sr));
    }
    Ok(())
}

/// The right edge of a tree: the roots of its perfect subtrees, largest (leftmost) first,
/// one for each set bit of its size. Enough to append leaves and to give the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    /// Left to right; `edges[i]` is the subtree of the i-th set bit from the top.
    edges: Vec<Hash>,
}

impl CompactRange {
    pub fn empty() -> Self {
        Self {
            size: 0,
            edges: Vec::new(),
        }
    }

    /// The nodes a tree of `size` leaves keeps on its right edge, left to right.
    pub fn edge_ids(size: u64) -> Vec<NodeId> {
        let mut ids = Vec::new();
        if size > 0 {
            perfect_parts(0, size, &mut ids);
        }
        ids
    }

    /// The right edge of the tree of `size`, from the nodes [`Self::edge_ids`] names.
    pub fn from_nodes(size: u64, nodes: &HashMap<NodeId, Hash>) -> Result<Self, ProofError> {
        let edges = Self::edge_ids(size)
            .into_iter()
            .map(|id| nodes.get(&id).copied().ok_or(ProofError::Missing(id)))
            .collect::<Result<_, _>>()?;
        Ok(Self { size, edges })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf (its hash); returns every perfect subtree it completes, the leaf
    /// itself first.
    pub fn append(&mut self, leaf: Hash) -> Vec<(NodeId, Hash)> {
        let index = self.size;
        let mut done = vec![(NodeId::new(0, index), leaf)];
        let mut hash = leaf;
        let mut level = 0;
        // Each trailing one bit of the old size is a left sibling waiting on this leaf.
        while (index >> level) & 1 == 1 {
            let left = self
                .edges
                .pop()
                .expect("a set bit has its subtree on the edge");
            hash = node_hash(&left, &hash);
            level += 1;
            done.push((NodeId::new(level, index >> level), hash));
        }
        self.edges.push(hash);
        self.size += 1;
        done
    }

    /// The root of the tree.
    pub fn root(&self) -> Hash {
        let mut iter = self.edges.iter().rev();
        let Some(last) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |right, left| node_hash(left, &right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962's MTH, straight from the definition.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn build(n: u64) -> (Vec<Hash>, HashMap<NodeId, Hash>, CompactRange) {
        let mut range = CompactRange::empty();
        let mut nodes = HashMap::new();
        let mut leaves = Vec::new();
        for i in 0..n {
            let leaf = leaf_hash(format!("line {i}").as_bytes());
            leaves.push(leaf);
            nodes.extend(range.append(leaf));
        }
        (leaves, nodes, range)
    }

    #[test]
    fn hashes_are_rfc6962s() {
        // The empty tree and a one-leaf tree of the empty string (RFC 6962 test vectors
        // as used by Certificate Transparency's implementations).
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn the_right_edge_gives_every_root_and_node() {
        for n in 0..70u64 {
            let (leaves, nodes, range) = build(n);
            assert_eq!(range.root(), mth(&leaves), "root of {n}");
            assert_eq!(range.size(), n);
            for (id, hash) in &nodes {
                let lo = (id.index << id.level) as usize;
                let hi = ((id.index + 1) << id.level) as usize;
                assert_eq!(*hash, mth(&leaves[lo..hi]), "node {id:?}");
            }
            let again = CompactRange::from_nodes(n, &nodes).unwrap();
            assert_eq!(again, range);
            assert_eq!(
                prove(Wanted::Root { size: n }, &nodes).unwrap(),
                [mth(&leaves[..n as usize])]
            );
        }
    }

    #[test]
    fn every_inclusion_proof_verifies_and_a_wrong_one_does_not() {
        for n in 1..40u64 {
            let (leaves, nodes, _) = build(n);
            let root = mth(&leaves);
            for i in 0..n {
                let wanted = Wanted::Inclusion { index: i, size: n };
                let needed: HashMap<_, _> = needed(wanted)
                    .unwrap()
                    .into_iter()
                    .map(|id| (id, nodes[&id]))
                    .collect();
                let proof = prove(wanted, &needed).unwrap();
                let leaf = leaves[i as usize];
                verify_inclusion(&leaf, i, n, &proof, &root).unwrap();
                assert!(verify_inclusion(&leaf_hash(b"other"), i, n, &proof, &root).is_err());
                if n > 1 {
                    let other = (i + 1) % n;
                    assert!(verify_inclusion(&leaf, other, n, &proof, &root).is_err());
                    assert!(verify_inclusion(&leaf, i, n, &proof[1..], &root).is_err());
                }
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_a_rewritten_log_does_not() {
        for n in 1..40u64 {
            let (leaves, nodes, _) = build(n);
            for m in 0..=n {
                let old_root = mth(&leaves[..m as usize]);
                let wanted = Wanted::Consistency { old: m, new: n };
                let needed: HashMap<_, _> = needed(wanted)
                    .unwrap()
                    .into_iter()
                    .map(|id| (id, nodes[&id]))
                    .collect();
                let proof = prove(wanted, &needed).unwrap();
                verify_consistency(m, n, &old_root, &mth(&leaves), &proof).unwrap();
                if m > 0 && m < n {
                    let mut rewritten = leaves[..m as usize].to_vec();
                    rewritten[0] = leaf_hash(b"rewritten");
                    assert!(
                        verify_consistency(m, n, &mth(&rewritten), &mth(&leaves), &proof).is_err(),
                        "{m} -> {n}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_proof_names_the_node_it_lacks() {
        let (_, mut nodes, _) = build(8);
        nodes.remove(&NodeId::new(2, 1));
        assert_eq!(
            inclusion_proof(0, 8, &nodes),
            Err(ProofError::Missing(NodeId::new(2, 1)))
        );
        assert!(matches!(
            consistency_proof(5, 3, &nodes),
            Err(ProofError::Shrunk { .. })
        ));
    }

    #[test]
    fn proofs_stay_logarithmic() {
        let n = 1u64 << 20;
        let ids = needed(Wanted::Inclusion {
            index: 123_456,
            size: n + 77,
        })
        .unwrap();
        assert!(ids.len() <= 2 * 21, "{} nodes", ids.len());
        let ids = needed(Wanted::Consistency {
            old: 1000,
            new: n + 77,
        })
        .unwrap();
        assert!(ids.len() <= 2 * 21 * 2, "{} nodes", ids.len());
    }
}
