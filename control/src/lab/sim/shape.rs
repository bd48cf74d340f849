//! Which networks the simulated nodes are on, and how many endpoints each
//! node has on each.

use rand::rngs::SmallRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// One network spanning every node, holding every endpoint: the worst
    /// case (every node holds and repairs the whole table).
    OneNetwork,
    /// The ingress network on every node (one endpoint each), 3 large
    /// networks (40% of the nodes each, 60% of the endpoints), 27 medium
    /// (2-8% of the nodes: 50-200 at 2,384; 25%) and 270 small ones (3-20
    /// nodes, 15%).
    Mix,
}

pub struct NetSpec {
    pub vni: u32,
    /// Node indexes, sorted.
    pub nodes: Vec<usize>,
    /// Endpoints per node, parallel to `nodes`.
    pub endpoints: Vec<u32>,
}

impl NetSpec {
    fn spread(vni: u32, mut nodes: Vec<usize>, total: usize) -> NetSpec {
        nodes.sort_unstable();
        let n = nodes.len().max(1);
        let endpoints = (0..nodes.len())
            .map(|i| (total / n + usize::from(i < total % n)) as u32)
            .collect();
        NetSpec {
            vni,
            nodes,
            endpoints,
        }
    }

    pub fn records(&self) -> usize {
        self.endpoints.iter().map(|&e| e as usize).sum()
    }
}

pub const INGRESS_VNI: u32 = 4096;

pub fn build(shape: Shape, nodes: usize, total: usize, seed: u64) -> Vec<NetSpec> {
    let all: Vec<usize> = (0..nodes).collect();
    match shape {
        Shape::OneNetwork => vec![NetSpec::spread(4097, all, total)],
        Shape::Mix => {
            let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
            let mut nets = vec![NetSpec::spread(INGRESS_VNI, all, nodes)];
            let pick = |rng: &mut SmallRng, size: usize| -> Vec<usize> {
                sample(rng, nodes, size.clamp(1, nodes)).into_vec()
            };
            let groups: [(usize, f64, (usize, usize)); 3] = [
                (3, 0.60, (nodes * 2 / 5, nodes * 2 / 5)),
                (27, 0.25, ((nodes / 48).max(3), (nodes / 12).max(3))),
                (270, 0.15, (3, 20)),
            ];
            let mut vni = 4097;
            let mut left = total;
            for (g, &(count, share, (lo, hi))) in groups.iter().enumerate() {
                let group_total = if g == groups.len() - 1 {
                    left
                } else {
                    (total as f64 * share) as usize
                };
                left -= group_total;
                for c in 0..count {
                    let size = rng.random_range(lo..=hi.max(lo));
                    let n_total = group_total / count + usize::from(c < group_total % count);
                    nets.push(NetSpec::spread(vni, pick(&mut rng, size), n_total));
                    vni += 1;
                }
            }
            nets
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_hold_every_endpoint() {
        let one = build(Shape::OneNetwork, 100, 4001, 1);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].records(), 4001);
        let mix = build(Shape::Mix, 2384, 96_287, 1);
        assert_eq!(mix.len(), 301);
        let endpoints: usize = mix[1..].iter().map(NetSpec::records).sum();
        assert_eq!(endpoints, 96_287);
        assert_eq!(mix[0].nodes.len(), 2384);
        assert!(mix[1].nodes.len() >= 900);
        assert!(mix.iter().all(|n| n.nodes.windows(2).all(|w| w[0] < w[1])));
    }
}
