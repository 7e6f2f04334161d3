//! Fair share between lanes for a claim batch, free of SQL (compiled once, not per database):
//! which lane each claim of a batch is sent to, from the lanes the batch has read.

use std::collections::{HashMap, HashSet};

/// One slave's request in a claim batch.
pub(crate) struct ClaimWant<'a> {
    pub slave: &'a str,
    pub recipes: &'a [String],
    pub slots: i64,
    pub lease_id: &'a str,
}

/// A lane: (recipe, priority, submitter).
pub(crate) type LaneKey = (String, i64, String);

#[derive(Clone)]
pub(crate) struct Lane {
    pub recipe: String,
    pub priority: i64,
    pub submitter: String,
    pub remaining: i64,
    pub last_served: i64,
    /// Whether a claim of this batch was sent to the lane.
    pub served: bool,
    pub taken: i64,
    /// Highest task id this batch took from the lane: a later round must not pick it again
    /// (SQLite's batch is one transaction, whose own picks are still queued to it; PostgreSQL's
    /// rounds commit their leases, so they do not use it).
    pub after_id: i64,
}

/// The lanes with work that a claim batch has read, first in line first, and the batch's
/// `last_served` marks.
///
/// A batch of `n` claims reads only the first `n + 1` lanes. Each claim goes to the first lane
/// in line that serves one of its recipes and then sends that lane to the back of its priority;
/// the lanes not read are all behind those read. So a claim sent to a lane it is the first to
/// reach is sent there whatever the unread lanes are. Only two kinds of claim need them: one that
/// finds no lane, and one that reaches a lane already served in the batch while lanes of that
/// lane's priority may be unread (an unread one would be before it). Then every lane of the
/// pending claims' recipes is read and the round is decided again. A batch reads O(claims)
/// lanes, not one row per recipe × priority × submitter that has work.
pub(crate) struct Lanes {
    pub lanes: Vec<Lane>,
    /// The last `last_served` mark given out (the next one is this + 1).
    pub serial: i64,
    /// Whether every lane with work that a pending claim could take was read.
    pub complete: bool,
}

impl Lanes {
    /// The lanes of a read of the first `limit` lanes with work (all with `None`), in line:
    /// `(recipe, priority, submitter, queued, last_served, newest mark of all lanes)`.
    pub(crate) fn from_rows(
        rows: Vec<(String, i64, String, i64, i64, i64)>,
        limit: Option<usize>,
    ) -> Lanes {
        let complete = limit.is_none_or(|n| rows.len() < n);
        // No lane with work: nothing is picked, and the mark is not needed.
        let serial = rows.first().map_or(0, |row| row.5);
        let lanes = rows
            .into_iter()
            .map(
                |(recipe, priority, submitter, queued, last_served, _)| Lane {
                    recipe,
                    priority,
                    submitter,
                    remaining: queued,
                    last_served,
                    served: false,
                    taken: 0,
                    after_id: 0,
                },
            )
            .collect();
        Lanes {
            lanes,
            serial,
            complete,
        }
    }

    /// Adds the lanes of a read of every lane of the pending claims' recipes that this batch
    /// has not read yet. The lanes already read keep their place and what the batch did to
    /// them; the others go behind them, where they are in line.
    pub(crate) fn add_unread(&mut self, all: Lanes) {
        let known: HashSet<LaneKey> = self.lanes.iter().map(Lane::key).collect();
        self.lanes
            .extend(all.lanes.into_iter().filter(|l| !known.contains(&l.key())));
        self.complete = true;
    }

    /// Sends each pending claim to a lane, serving lanes round-robin within a priority (fair
    /// share), and returns the claims by lane. `None`, with nothing changed, when a claim may
    /// belong to a lane not read yet (see [`Lanes`]).
    pub(crate) fn assign(
        &mut self,
        pending: &[usize],
        wants: &[ClaimWant<'_>],
    ) -> Option<HashMap<usize, Vec<usize>>> {
        let mut lanes = self.lanes.clone();
        let mut serial = self.serial;
        let last_priority = lanes.last().map_or(i64::MIN, |l| l.priority);
        let mut by_lane: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut order: Vec<usize> = (0..lanes.len()).collect();
        for &w in pending {
            let found = order.iter().position(|&l| {
                lanes[l].remaining > 0 && wants[w].recipes.iter().any(|r| *r == lanes[l].recipe)
            });
            let Some(pos) = found else {
                if self.complete {
                    continue;
                }
                return None;
            };
            let l = order.remove(pos);
            if !self.complete && lanes[l].served && lanes[l].priority == last_priority {
                return None;
            }
            lanes[l].remaining -= 1;
            lanes[l].served = true;
            serial += 1;
            lanes[l].last_served = serial;
            by_lane.entry(l).or_default().push(w);
            // Back of its priority group: served most recently.
            let back = order
                .iter()
                .position(|&o| lanes[o].priority < lanes[l].priority)
                .unwrap_or(order.len());
            order.insert(back, l);
        }
        self.lanes = lanes;
        self.serial = serial;
        Some(by_lane)
    }
}

impl Lane {
    pub(crate) fn key(&self) -> LaneKey {
        (self.recipe.clone(), self.priority, self.submitter.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(recipe: &str, priority: i64, submitter: usize, last_served: i64) -> Lane {
        Lane {
            recipe: recipe.into(),
            priority,
            submitter: format!("user{submitter}"),
            remaining: 1 + (last_served % 3),
            last_served,
            served: false,
            taken: 0,
            after_id: 0,
        }
    }

    /// Each claim's lane as (recipe, priority, submitter); `None` for a claim without one.
    fn lanes_of(
        lanes: &Lanes,
        by_lane: &HashMap<usize, Vec<usize>>,
        claims: usize,
    ) -> Vec<Option<LaneKey>> {
        let mut of = vec![None; claims];
        for (&l, claimers) in by_lane {
            for &w in claimers {
                of[w] = Some(lanes.lanes[l].key());
            }
        }
        of
    }

    #[test]
    fn a_batch_that_reads_the_first_lanes_sends_every_claim_where_reading_all_would() {
        // Deterministic pseudo-random cases: lanes in line (priority down, last served up),
        // claims wanting one recipe or both.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let (mut partial_reads, mut fallbacks) = (0, 0);
        for _ in 0..2000 {
            let mut all: Vec<Lane> = (0..1 + next(12) as usize)
                .map(|i| {
                    let recipe = if next(4) == 0 { "other" } else { "debian" };
                    lane(recipe, 1 + next(3) as i64, i, next(50) as i64)
                })
                .collect();
            all.sort_by(|a, b| (b.priority, a.last_served).cmp(&(a.priority, b.last_served)));
            let debian = vec!["debian".to_string()];
            let other = vec!["other".to_string()];
            let both = vec!["debian".to_string(), "other".to_string()];
            let recipes: Vec<&Vec<String>> = (0..1 + next(6))
                .map(|_| match next(3) {
                    0 => &debian,
                    1 => &other,
                    _ => &both,
                })
                .collect();
            let wants: Vec<ClaimWant> = recipes
                .iter()
                .map(|r| ClaimWant {
                    slave: "s",
                    recipes: r,
                    slots: 100,
                    lease_id: "l",
                })
                .collect();
            let pending: Vec<usize> = (0..wants.len()).collect();
            let mut full = Lanes {
                lanes: all.clone(),
                serial: 50,
                complete: true,
            };
            let expected = full.assign(&pending, &wants).expect("all lanes read");
            let expected = lanes_of(&full, &expected, wants.len());

            let limit = wants.len() + 1;
            let mut first = Lanes {
                lanes: all.iter().take(limit).cloned().collect(),
                serial: 50,
                complete: all.len() < limit,
            };
            partial_reads += usize::from(!first.complete);
            let got = match first.assign(&pending, &wants) {
                Some(got) => got,
                None => {
                    fallbacks += 1;
                    assert!(
                        first.lanes.iter().all(|l| !l.served),
                        "a refused round changes nothing"
                    );
                    first.lanes.extend(all.iter().skip(limit).cloned());
                    first.complete = true;
                    first.assign(&pending, &wants).expect("all lanes read")
                }
            };
            assert_eq!(lanes_of(&first, &got, wants.len()), expected);
            assert_eq!(first.serial, full.serial);
        }
        // Both paths were taken.
        assert!(
            partial_reads > 100 && fallbacks > 10,
            "{partial_reads} partial reads, {fallbacks} fallbacks"
        );
        assert!(
            fallbacks < partial_reads,
            "{partial_reads} partial reads, {fallbacks} fallbacks"
        );
    }
}
