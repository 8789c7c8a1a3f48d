//! The group coordinator's deadlines in time order: for each group, the earliest moment
//! something may happen to it without a request (a member's session expires, a rebalance or
//! sync deadline passes, a handed-out member id lapses, committed offsets expire, or the group
//! is empty and can be forgotten). The clock pops only the groups that are due, instead of
//! scanning every group on every tick.

use std::collections::{BTreeSet, HashMap};

/// At most one deadline per group; setting one replaces the previous.
#[derive(Debug, Default)]
pub struct Deadlines {
    order: BTreeSet<(i64, String)>,
    by_group: HashMap<String, i64>,
}

impl Deadlines {
    /// `group`'s next deadline is `at` (`None`: nothing will happen to it without a request).
    pub fn set(&mut self, group: &str, at: Option<i64>) {
        if self.by_group.get(group).copied() == at {
            return;
        }
        if let Some(old) = self.by_group.remove(group) {
            self.order.remove(&(old, group.to_string()));
        }
        if let Some(at) = at {
            self.order.insert((at, group.to_string()));
            self.by_group.insert(group.to_string(), at);
        }
    }

    /// Removes and returns the groups whose deadline is at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: i64) -> Vec<String> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.order.first() {
            if *at > now {
                break;
            }
            let (_, group) = self.order.pop_first().expect("checked above: not empty");
            self.by_group.remove(&group);
            due.push(group);
        }
        due
    }

    /// How many groups have a deadline.
    pub fn len(&self) -> usize {
        self.by_group.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_group.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_due_groups_pop_in_time_order() {
        let mut d = Deadlines::default();
        d.set("a", Some(30));
        d.set("b", Some(10));
        d.set("c", Some(20));
        d.set("d", None);
        assert_eq!(d.len(), 3);
        assert!(d.pop_due(9).is_empty());
        assert_eq!(d.pop_due(20), vec!["b".to_string(), "c".to_string()]);
        // Rescheduling replaces: "a" moves later, then is cancelled.
        d.set("a", Some(50));
        assert!(d.pop_due(40).is_empty());
        d.set("a", None);
        assert!(d.pop_due(i64::MAX).is_empty());
        assert!(d.is_empty());
    }
}
