//! Replica placement for new partitions, after the rules of Kafka's KRaft controller (its
//! striped replica placer):
//!
//! - Brokers are grouped by rack; brokers without a rack form one more rack of their own.
//!   Racks are visited round-robin from a random start that advances by one per partition,
//!   so the replicas of a partition spread over as many racks as possible and consecutive
//!   partitions start on different racks (the "stripes").
//! - Within a rack, brokers (sorted by id) are taken round-robin from a random start that
//!   also advances per partition; a rack hands out its unfenced brokers first and its fenced
//!   ones only once those are used up for that partition.
//! - One difference from Kafka, on purpose: Kafka keeps one cursor per rack and moves it on
//!   every partition the rack takes part in, so when a rack alternates between supplying a
//!   follower and the leader (RF 2 over three racks of two brokers) the same broker of each
//!   rack leads every time and the same replica sets repeat until the next shuffle. Here a
//!   rack keeps a leader cursor (moved when it supplies a leader; its followers in that
//!   partition come right after the leader) and a follower cursor (moved when it supplies
//!   only followers), so leaders and replicas rotate within every rack. With one rack, or
//!   whenever a rack's role does not alternate, the sequences are Kafka's (see the tests).
//! - The first replica (the preferred leader) is always an unfenced broker. Once as many
//!   partitions as there are unfenced brokers have been placed, the rack order and every
//!   rack's broker order are shuffled, so the next round does not repeat the same sets.
//! - The replication factor must be at least 1 and at most the number of brokers given
//!   (fenced ones count, as in Kafka: they can hold follower replicas), and at least one
//!   broker must be unfenced.
//!
//! The caller passes the brokers that may get new replicas (Kafka leaves out brokers in
//! controlled shutdown) and a source of randomness, so tests are deterministic.

use std::collections::{BTreeMap, BTreeSet};

/// A broker as the placer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSlot {
    pub id: i32,
    pub rack: Option<String>,
    pub fenced: bool,
}

/// Why replicas could not be placed (all map to Kafka's INVALID_REPLICATION_FACTOR).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error(
        "The target replication factor of {wanted} cannot be reached because only \
         {available} broker(s) are registered."
    )]
    NotEnoughBrokers { wanted: i16, available: usize },
    #[error("Invalid replication factor: the replication factor must be positive.")]
    InvalidReplicationFactor,
    #[error("All brokers are currently fenced.")]
    AllBrokersFenced,
}

/// The replicas of partitions `first..first + count` (element `i` is partition `first + i`;
/// the first replica of each is its preferred leader). The placement itself does not depend
/// on `first`, as in Kafka's placer for a new topic. `rng(n)` returns a number in `0..n`
/// (anything larger is taken modulo `n`).
pub fn place(
    brokers: &[BrokerSlot],
    first: i32,
    count: i32,
    replication_factor: i16,
    rng: &mut impl FnMut(usize) -> usize,
) -> Result<Vec<Vec<i32>>, PlacementError> {
    let _ = first;
    if replication_factor < 1 {
        return Err(PlacementError::InvalidReplicationFactor);
    }
    let mut racks = RackRing::new(brokers, rng);
    if racks.total == 0 || (replication_factor as usize) > racks.total {
        return Err(PlacementError::NotEnoughBrokers {
            wanted: replication_factor,
            available: racks.total,
        });
    }
    if racks.unfenced == 0 {
        return Err(PlacementError::AllBrokersFenced);
    }
    let mut out = Vec::with_capacity(count.max(0) as usize);
    for _ in 0..count.max(0) {
        out.push(racks.place(replication_factor as usize, rng)?);
    }
    Ok(out)
}

/// How many partitions each broker is the preferred leader (first replica) of.
pub fn leader_counts(assignment: &[Vec<i32>]) -> BTreeMap<i32, usize> {
    let mut counts = BTreeMap::new();
    for replicas in assignment {
        if let Some(&leader) = replicas.first() {
            *counts.entry(leader).or_insert(0) += 1;
        }
    }
    counts
}

fn pick(rng: &mut impl FnMut(usize) -> usize, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        rng(n) % n
    }
}

fn shuffle<T>(items: &mut [T], rng: &mut impl FnMut(usize) -> usize) {
    for i in (1..items.len()).rev() {
        let j = pick(rng, i + 1);
        items.swap(i, j);
    }
}

/// One rack's brokers (sorted by id) and its cursors. Within a round (one partition) a rack
/// hands out each of its brokers at most once: unfenced ones first, from where this round's
/// sequence starts, then fenced ones. The sequence starts at the leader cursor when the
/// rack supplies the partition's leader (its followers in that rack come right after the
/// leader), else at the follower cursor; each cursor moves on by one per round it starts.
#[derive(Default)]
struct Rack {
    unfenced: Vec<i32>,
    fenced: Vec<i32>,
    /// Next leader: `unfenced[lead]`.
    lead: usize,
    /// Start of the unfenced sequence in rounds where the rack supplies only followers.
    follow: usize,
    follow_round: u64,
    fenced_start: usize,
    fenced_round: u64,
    /// The round this round's state belongs to.
    round: Option<u64>,
    /// This round's unfenced sequence: its start and how many of it were handed out.
    start: usize,
    taken: usize,
    fenced_taken: usize,
}

impl Rack {
    fn init(&mut self, rng: &mut impl FnMut(usize) -> usize) {
        self.unfenced.sort_unstable();
        self.fenced.sort_unstable();
        if !self.fenced.is_empty() {
            self.fenced_start = pick(rng, self.fenced.len());
        }
        if !self.unfenced.is_empty() {
            self.lead = pick(rng, self.unfenced.len());
            self.follow = self.lead;
        }
    }

    fn shuffle(&mut self, rng: &mut impl FnMut(usize) -> usize) {
        shuffle(&mut self.unfenced, rng);
        shuffle(&mut self.fenced, rng);
    }

    /// The partition's leader from this rack (its first pick of the round), if it has an
    /// unfenced broker.
    fn leader(&mut self, round: u64) -> Option<i32> {
        let n = self.unfenced.len();
        if n == 0 || self.round == Some(round) {
            return None;
        }
        self.round = Some(round);
        self.start = self.lead % n;
        self.taken = 1;
        self.fenced_taken = 0;
        self.lead = (self.start + 1) % n;
        Some(self.unfenced[self.start])
    }

    /// The next broker of this round: unfenced first, then fenced; `None` once all were
    /// handed out.
    fn next(&mut self, round: u64) -> Option<i32> {
        let n = self.unfenced.len();
        if self.round != Some(round) {
            self.round = Some(round);
            if n > 0 && self.follow_round != round {
                self.follow = (self.follow + 1) % n;
                self.follow_round = round;
            }
            self.start = self.follow;
            self.taken = 0;
            self.fenced_taken = 0;
        }
        if self.taken < n {
            let b = self.unfenced[(self.start + self.taken) % n];
            self.taken += 1;
            return Some(b);
        }
        let m = self.fenced.len();
        if self.fenced_taken >= m {
            return None;
        }
        if self.fenced_taken == 0 && self.fenced_round != round {
            self.fenced_start = (self.fenced_start + 1) % m;
            self.fenced_round = round;
        }
        let b = self.fenced[(self.fenced_start + self.fenced_taken) % m];
        self.fenced_taken += 1;
        Some(b)
    }
}

/// The racks, sorted by name (no rack first), visited round-robin.
struct RackRing {
    racks: Vec<Rack>,
    start: usize,
    /// The current round (one per partition; never repeats).
    round: u64,
    /// Partitions placed since the last shuffle.
    since_shuffle: usize,
    total: usize,
    unfenced: usize,
}

impl RackRing {
    fn new(brokers: &[BrokerSlot], rng: &mut impl FnMut(usize) -> usize) -> RackRing {
        let mut by_rack: BTreeMap<Option<&str>, Rack> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        let (mut total, mut unfenced) = (0, 0);
        for b in brokers {
            if !seen.insert(b.id) {
                continue;
            }
            let rack = by_rack.entry(b.rack.as_deref()).or_default();
            total += 1;
            if b.fenced {
                rack.fenced.push(b.id);
            } else {
                unfenced += 1;
                rack.unfenced.push(b.id);
            }
        }
        let mut racks: Vec<Rack> = by_rack.into_values().collect();
        for rack in &mut racks {
            rack.init(rng);
        }
        let start = pick(rng, racks.len());
        RackRing {
            racks,
            start,
            round: 0,
            since_shuffle: 0,
            total,
            unfenced,
        }
    }

    fn reshuffle(&mut self, rng: &mut impl FnMut(usize) -> usize) {
        shuffle(&mut self.racks, rng);
        for rack in &mut self.racks {
            rack.shuffle(rng);
        }
    }

    /// The replicas of one partition: the leader from the first rack (from the current
    /// start) with an unfenced broker, then one broker per rack round-robin from the start,
    /// passing over the leader's rack the first time.
    fn place(
        &mut self,
        replication_factor: usize,
        rng: &mut impl FnMut(usize) -> usize,
    ) -> Result<Vec<i32>, PlacementError> {
        let not_enough = PlacementError::NotEnoughBrokers {
            wanted: replication_factor as i16,
            available: self.total,
        };
        let n = self.racks.len();
        if n == 0 {
            return Err(not_enough);
        }
        if self.since_shuffle == self.unfenced && self.unfenced > 1 {
            self.reshuffle(rng);
            self.since_shuffle = 0;
        }
        if self.start >= n {
            self.start = 0;
        }
        let round = self.round;
        let mut replicas = Vec::with_capacity(replication_factor);
        let mut leader_rack = None;
        for step in 0..n {
            let r = (self.start + step) % n;
            if let Some(b) = self.racks[r].leader(round) {
                replicas.push(b);
                leader_rack = Some(r);
                break;
            }
        }
        let Some(mut skip) = leader_rack else {
            return Err(PlacementError::AllBrokersFenced);
        };
        // Each rack hands out each of its brokers at most once per round and there are at
        // least `replication_factor` brokers, so this ends within `total` laps.
        let mut r = self.start;
        let mut visits = 0usize;
        while replicas.len() < replication_factor {
            if visits > n * (self.total + 1) {
                return Err(not_enough);
            }
            visits += 1;
            if r == skip {
                skip = usize::MAX;
            } else if let Some(b) = self.racks[r].next(round) {
                replicas.push(b);
            }
            r = (r + 1) % n;
        }
        self.round += 1;
        self.since_shuffle += 1;
        self.start += 1;
        Ok(replicas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32, rack: Option<&str>) -> BrokerSlot {
        BrokerSlot {
            id,
            rack: rack.map(str::to_string),
            fenced: false,
        }
    }

    /// A small deterministic generator (xorshift), as `place` wants it.
    fn seeded(mut state: u64) -> impl FnMut(usize) -> usize {
        move |n| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n.max(1) as u64) as usize
        }
    }

    fn distinct(replicas: &[i32]) -> bool {
        replicas.iter().collect::<BTreeSet<_>>().len() == replicas.len()
    }

    #[test]
    fn three_brokers_rf3_twelve_partitions_lead_four_each() {
        let brokers: Vec<_> = (1..=3).map(|id| broker(id, None)).collect();
        for seed in 1..50 {
            let got = place(&brokers, 0, 12, 3, &mut seeded(seed)).unwrap();
            assert_eq!(got.len(), 12);
            for replicas in &got {
                assert_eq!(replicas.len(), 3);
                assert!(distinct(replicas), "{replicas:?}");
            }
            assert_eq!(
                leader_counts(&got),
                BTreeMap::from([(1, 4), (2, 4), (3, 4)]),
                "seed {seed}: {got:?}"
            );
        }
    }

    #[test]
    fn leaders_spread_evenly_over_many_brokers() {
        let brokers: Vec<_> = (0..5).map(|id| broker(id, None)).collect();
        let got = place(&brokers, 0, 20, 2, &mut seeded(7)).unwrap();
        assert_eq!(
            leader_counts(&got).into_values().collect::<Vec<_>>(),
            [4; 5]
        );
        let replicas_per_broker = got.iter().flatten().fold(BTreeMap::new(), |mut m, b| {
            *m.entry(*b).or_insert(0) += 1;
            m
        });
        assert_eq!(
            replicas_per_broker.into_values().collect::<Vec<_>>(),
            [8; 5]
        );
    }

    #[test]
    fn rf2_over_three_racks_puts_each_partition_on_two_racks() {
        let brokers: Vec<_> = (0..6)
            .map(|id| broker(id, Some(["a", "b", "c"][id as usize / 2])))
            .collect();
        let rack_of = |id: i32| brokers[id as usize].rack.clone();
        for seed in 1..50 {
            let got = place(&brokers, 0, 30, 2, &mut seeded(seed)).unwrap();
            for replicas in &got {
                assert_eq!(replicas.len(), 2);
                assert_ne!(rack_of(replicas[0]), rack_of(replicas[1]), "{got:?}");
            }
            // Leaders over the racks evenly, and no broker left out.
            let leaders = leader_counts(&got);
            assert_eq!(leaders.len(), 6, "seed {seed}: {leaders:?}");
            let per_rack = leaders.iter().fold(BTreeMap::new(), |mut m, (b, n)| {
                *m.entry(rack_of(*b)).or_insert(0) += n;
                m
            });
            assert_eq!(per_rack.into_values().collect::<Vec<_>>(), [10, 10, 10]);
        }
    }

    #[test]
    fn rf3_over_three_racks_uses_every_rack_and_brokers_without_rack_form_one() {
        let mut brokers: Vec<_> = (0..6)
            .map(|id| broker(id, Some(["a", "b", "c"][id as usize / 2])))
            .collect();
        let got = place(&brokers, 0, 12, 3, &mut seeded(3)).unwrap();
        for replicas in &got {
            let racks: BTreeSet<_> = replicas
                .iter()
                .map(|&b| brokers[b as usize].rack.clone())
                .collect();
            assert_eq!(racks.len(), 3, "{got:?}");
        }
        // Two brokers without a rack make a fourth rack: RF 4 lands on all four.
        brokers.push(broker(6, None));
        brokers.push(broker(7, None));
        let got = place(&brokers, 0, 8, 4, &mut seeded(3)).unwrap();
        for replicas in &got {
            let racks: BTreeSet<_> = replicas
                .iter()
                .map(|&b| brokers[b as usize].rack.clone())
                .collect();
            assert_eq!(racks.len(), 4, "{got:?}");
        }
    }

    #[test]
    fn too_high_or_too_low_replication_factors_are_refused() {
        let brokers: Vec<_> = (1..=3).map(|id| broker(id, None)).collect();
        let err = place(&brokers, 0, 1, 4, &mut seeded(1)).unwrap_err();
        assert_eq!(
            err,
            PlacementError::NotEnoughBrokers {
                wanted: 4,
                available: 3
            }
        );
        assert_eq!(
            err.to_string(),
            "The target replication factor of 4 cannot be reached because only 3 broker(s) \
             are registered."
        );
        assert_eq!(
            place(&brokers, 0, 1, 0, &mut seeded(1)),
            Err(PlacementError::InvalidReplicationFactor)
        );
        assert_eq!(
            place(&brokers, 0, 1, -1, &mut seeded(1)),
            Err(PlacementError::InvalidReplicationFactor)
        );
        assert_eq!(
            place(&[], 0, 1, 1, &mut seeded(1)),
            Err(PlacementError::NotEnoughBrokers {
                wanted: 1,
                available: 0
            })
        );
        let fenced: Vec<_> = (1..=3)
            .map(|id| BrokerSlot {
                fenced: true,
                ..broker(id, None)
            })
            .collect();
        assert_eq!(
            place(&fenced, 0, 1, 1, &mut seeded(1)),
            Err(PlacementError::AllBrokersFenced)
        );
        assert_eq!(place(&brokers, 0, 0, 3, &mut seeded(1)), Ok(vec![]));
    }

    #[test]
    fn fenced_brokers_lead_nothing_and_follow_only_when_needed() {
        let mut brokers: Vec<_> = (1..=4).map(|id| broker(id, None)).collect();
        brokers[1].fenced = true; // broker 2
                                  // Enough unfenced brokers: broker 2 gets nothing.
        for seed in 1..30 {
            let got = place(&brokers, 0, 12, 3, &mut seeded(seed)).unwrap();
            assert!(got.iter().flatten().all(|&b| b != 2), "{got:?}");
            assert_eq!(
                leader_counts(&got),
                BTreeMap::from([(1, 4), (3, 4), (4, 4)])
            );
        }
        // RF 4 needs it, but never as the leader.
        let got = place(&brokers, 0, 6, 4, &mut seeded(5)).unwrap();
        for replicas in &got {
            assert!(distinct(replicas));
            assert_ne!(replicas[0], 2);
            assert!(replicas.contains(&2));
        }
    }

    #[test]
    fn the_same_random_numbers_give_the_same_placement() {
        let brokers: Vec<_> = (0..6)
            .map(|id| broker(id, Some(["a", "b"][id as usize % 2])))
            .collect();
        let a = place(&brokers, 0, 24, 3, &mut seeded(42)).unwrap();
        let b = place(&brokers, 5, 24, 3, &mut seeded(42)).unwrap();
        assert_eq!(a, b);
        // With all random numbers 0 the stripes are plain: racks a (even ids) and b (odd)
        // alternate, leaders and followers rotate within each rack.
        let zero = place(&brokers, 0, 6, 2, &mut |_| 0).unwrap();
        assert_eq!(
            zero,
            [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 0]].map(Vec::from)
        );
        let c = place(&brokers, 0, 24, 3, &mut seeded(43)).unwrap();
        assert_ne!(a, c, "another seed, another placement");
    }

    /// Hands out `values` in order (then zeros): the random starts, rack by rack (fenced
    /// list, then unfenced list), then the racks' start.
    fn scripted(values: &[usize]) -> impl FnMut(usize) -> usize + '_ {
        let mut next = values.iter();
        move |n| next.next().copied().unwrap_or(0) % n.max(1)
    }

    fn fenced(id: i32, rack: Option<&str>) -> BrokerSlot {
        BrokerSlot {
            fenced: true,
            ..broker(id, rack)
        }
    }

    /// The sequences Kafka's striped placer produces for the same brokers and starts.
    #[test]
    fn stripes_match_kafkas_on_one_rack_with_a_fenced_broker() {
        let brokers = [
            broker(3, None),
            fenced(1, None),
            broker(0, None),
            broker(4, None),
            broker(2, None),
        ];
        // Fenced [1] starts at 0, unfenced [0, 2, 3, 4] at 2 (broker 3).
        let got = place(&brokers, 0, 4, 4, &mut scripted(&[0, 2, 0])).unwrap();
        assert_eq!(
            got,
            [[3, 4, 0, 2], [4, 0, 2, 3], [0, 2, 3, 4], [2, 3, 4, 0]].map(Vec::from)
        );
        // RF 3 over two unfenced brokers and a fenced one: the fenced one is last.
        let brokers = [broker(3, None), fenced(1, None), broker(2, None)];
        let got = place(&brokers, 0, 2, 3, &mut scripted(&[0, 1, 0])).unwrap();
        assert_eq!(got, [[3, 2, 1], [2, 3, 1]].map(Vec::from));
    }

    #[test]
    fn stripes_match_kafkas_over_three_racks() {
        let brokers = [
            broker(11, Some("1")),
            broker(10, Some("1")),
            broker(30, Some("3")),
            broker(31, Some("3")),
            broker(21, Some("2")),
            fenced(20, Some("2")),
        ];
        // Rack 1 starts at 11, rack 2 at 21 (and fenced 20), rack 3 at 31; racks at "1".
        let got = place(&brokers, 0, 3, 4, &mut scripted(&[1, 0, 0, 1, 0])).unwrap();
        assert_eq!(
            got,
            [[11, 21, 31, 10], [21, 30, 10, 20], [31, 11, 21, 30]].map(Vec::from)
        );
    }

    #[test]
    fn racks_with_only_fenced_brokers_never_lead() {
        let brokers = [
            broker(11, Some("1")),
            broker(10, Some("1")),
            fenced(30, Some("3")),
            fenced(31, Some("3")),
            fenced(20, Some("2")),
            fenced(21, Some("2")),
            broker(41, Some("4")),
            fenced(40, Some("4")),
        ];
        for seed in 1..20 {
            let got = place(&brokers, 0, 12, 4, &mut seeded(seed)).unwrap();
            for replicas in &got {
                assert!([10, 11, 41].contains(&replicas[0]), "{got:?}");
                let racks: BTreeSet<_> = replicas.iter().map(|b| b / 10).collect();
                assert_eq!(racks.len(), 4, "{got:?}");
            }
            assert_eq!(leader_counts(&got).values().sum::<usize>(), 12);
        }
    }

    #[test]
    fn duplicate_broker_ids_are_counted_once() {
        let brokers = vec![broker(1, None), broker(1, None), broker(2, None)];
        assert_eq!(
            place(&brokers, 0, 1, 3, &mut seeded(1)),
            Err(PlacementError::NotEnoughBrokers {
                wanted: 3,
                available: 2
            })
        );
    }
}
