//! A queue that serves its tenants (namespaces) in turn, one item each, so that a namespace
//! with a thousand items waiting delays another namespace's next item by one at most; with a
//! bound per tenant and in all, so that one tenant cannot fill it for everyone.
//!
//! The status writer and the Event publisher take their work from one: a burst of statuses
//! or Events in one team's namespace (200 policies going stale at once) must not hold up
//! another team's.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

/// Items by tenant, served round-robin.
#[derive(Debug)]
pub struct FairQueue<T> {
    queues: HashMap<Arc<str>, VecDeque<T>>,
    /// Tenants with items waiting, in the order they are served next.
    turns: VecDeque<Arc<str>>,
    len: usize,
    per_tenant: usize,
    total: usize,
}

/// Why an item was not queued; the item comes back with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// The tenant has `per_tenant` items waiting.
    Tenant,
    /// The queue has `total` items waiting.
    Queue,
}

impl<T> FairQueue<T> {
    /// A queue taking at most `per_tenant` items of one tenant and `total` in all.
    pub fn new(per_tenant: usize, total: usize) -> Self {
        FairQueue { queues: HashMap::new(), turns: VecDeque::new(), len: 0, per_tenant, total }
    }

    /// Queues `item` behind the tenant's other items, unless that would pass a bound.
    pub fn push(&mut self, tenant: &Arc<str>, item: T) -> Result<(), (Full, T)> {
        if self.len >= self.total {
            return Err((Full::Queue, item));
        }
        let queue = self.queues.entry(tenant.clone()).or_default();
        if queue.len() >= self.per_tenant {
            return Err((Full::Tenant, item));
        }
        if queue.is_empty() {
            self.turns.push_back(tenant.clone());
        }
        queue.push_back(item);
        self.len += 1;
        Ok(())
    }

    /// The next item: the oldest of the tenant whose turn it is, which then goes to the back
    /// of the line.
    pub fn pop(&mut self) -> Option<T> {
        let tenant = self.turns.pop_front()?;
        let queue = self.queues.get_mut(&tenant)?;
        let item = queue.pop_front();
        if queue.is_empty() {
            self.queues.remove(&tenant);
        } else {
            self.turns.push_back(tenant);
        }
        if item.is_some() {
            self.len -= 1;
        }
        if self.queues.is_empty() {
            // A burst leaves the maps at their largest; most of the time they are empty.
            self.queues.shrink_to_fit();
            self.turns.shrink_to_fit();
        }
        item
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> Arc<str> {
        name.into()
    }

    #[test]
    fn tenants_are_served_in_turn_and_each_in_order() {
        let mut queue = FairQueue::new(usize::MAX, usize::MAX);
        for i in 0..200 {
            queue.push(&tenant("busy"), format!("busy-{i}")).unwrap();
        }
        queue.push(&tenant("quiet"), "quiet-0".to_string()).unwrap();
        assert_eq!(queue.pop().as_deref(), Some("busy-0"));
        assert_eq!(queue.pop().as_deref(), Some("quiet-0"), "behind one item of the busy tenant, not 200");
        let rest: Vec<String> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(rest.len(), 199);
        assert!(rest.windows(2).all(|w| w[0] < w[1] || w[0].len() < w[1].len()), "in order within a tenant");
        assert!(queue.is_empty() && queue.pop().is_none());
    }

    #[test]
    fn one_tenant_cannot_fill_the_queue_for_the_others() {
        let mut queue = FairQueue::new(2, 3);
        queue.push(&tenant("a"), 1).unwrap();
        queue.push(&tenant("a"), 2).unwrap();
        assert_eq!(queue.push(&tenant("a"), 3), Err((Full::Tenant, 3)));
        queue.push(&tenant("b"), 4).unwrap();
        assert_eq!(queue.push(&tenant("c"), 5), Err((Full::Queue, 5)));
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.pop(), Some(1));
        queue.push(&tenant("c"), 5).unwrap();
        assert_eq!([queue.pop(), queue.pop(), queue.pop(), queue.pop()], [Some(4), Some(2), Some(5), None]);
    }
}
