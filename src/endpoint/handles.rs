//! The connection table: slots addressed by handles that carry a generation.
//!
//! A slot's generation grows every time its connection is removed, and a handle only reaches the slot
//! while the generations agree, so a handle kept after its connection ended can never reach the next
//! connection stored in the same slot. A slot whose generation would wrap is retired instead of reused.

/// Names one connection of an [`Endpoint`](crate::Endpoint).
///
/// Handles are cheap to copy and compare. Once the connection is drained and removed, its handle goes
/// stale: every call with it returns [`StaleHandle`](crate::StaleHandle), even after the slot is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionHandle {
    index: u32,
    generation: u32,
}

impl ConnectionHandle {
    /// The slot this handle names (slots are reused; only index and generation together identify a
    /// connection).
    pub fn index(self) -> u32 {
        self.index
    }

    /// The generation of the slot when the connection was stored.
    pub fn generation(self) -> u32 {
        self.generation
    }
}

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// A slab of values addressed by [`ConnectionHandle`]s.
#[derive(Debug)]
pub(crate) struct Table<T> {
    slots: Vec<Slot<T>>,
    /// Indices of empty slots that may be reused, most recently freed last.
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Table<T> {
    /// Stores `value`; `None` only when every one of the 2^32 slot indices is taken or retired.
    pub(crate) fn insert(&mut self, value: T) -> Option<ConnectionHandle> {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(self.slots.len()).ok()?;
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                index
            }
        };
        let slot = self.slots.get_mut(index as usize)?;
        slot.value = Some(value);
        self.len += 1;
        Some(ConnectionHandle {
            index,
            generation: slot.generation,
        })
    }

    /// The value `h` names, unless `h` is stale.
    pub(crate) fn get(&self, h: ConnectionHandle) -> Option<&T> {
        self.slots
            .get(h.index as usize)
            .filter(|s| s.generation == h.generation)
            .and_then(|s| s.value.as_ref())
    }

    /// The value `h` names, unless `h` is stale.
    pub(crate) fn get_mut(&mut self, h: ConnectionHandle) -> Option<&mut T> {
        self.slots
            .get_mut(h.index as usize)
            .filter(|s| s.generation == h.generation)
            .and_then(|s| s.value.as_mut())
    }

    /// Takes the value out; `h` and every copy of it go stale.
    pub(crate) fn remove(&mut self, h: ConnectionHandle) -> Option<T> {
        let slot = self
            .slots
            .get_mut(h.index as usize)
            .filter(|s| s.generation == h.generation)?;
        let value = slot.value.take()?;
        self.len -= 1;
        // A slot whose generation would wrap is never reused, so no old handle can match it again.
        if let Some(next) = slot.generation.checked_add(1) {
            slot.generation = next;
            self.free.push(h.index);
        }
        Some(value)
    }

    /// The number of stored values.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every stored value with its handle.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (ConnectionHandle, &T)> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            let value = s.value.as_ref()?;
            let index = u32::try_from(i).ok()?;
            Some((
                ConnectionHandle {
                    index,
                    generation: s.generation,
                },
                value,
            ))
        })
    }

    /// Forces the generation of an empty slot, to test wrapping.
    #[cfg(test)]
    pub(crate) fn set_generation(&mut self, index: u32, generation: u32) {
        if let Some(slot) = self.slots.get_mut(index as usize) {
            slot.generation = generation;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_handle_never_reaches_a_reused_slot() {
        let mut t = Table::default();
        let a = t.insert("a").unwrap();
        assert_eq!(t.get(a), Some(&"a"));
        assert_eq!(t.remove(a), Some("a"));
        assert_eq!(t.get(a), None);
        let b = t.insert("b").unwrap();
        assert_eq!(b.index(), a.index(), "the slot is reused");
        assert_ne!(a, b);
        assert_eq!(t.get(a), None);
        assert_eq!(t.get_mut(a), None);
        assert_eq!(t.remove(a), None);
        assert_eq!(t.get(b), Some(&"b"));
        assert_eq!(t.len(), 1);
        assert_eq!(t.iter().map(|(h, v)| (h, *v)).collect::<Vec<_>>(), vec![(b, "b")]);
    }

    #[test]
    fn a_slot_whose_generation_would_wrap_is_retired() {
        let mut t = Table::default();
        let a = t.insert(1).unwrap();
        t.remove(a).unwrap();
        let b = t.insert(2).unwrap();
        t.remove(b).unwrap();
        t.set_generation(b.index(), u32::MAX);
        let c = t.insert(3).unwrap();
        assert_eq!(c.generation(), u32::MAX);
        t.remove(c).unwrap();
        let d = t.insert(4).unwrap();
        assert_ne!(d.index(), c.index(), "the wrapped slot is not reused");
        assert_eq!(t.get(c), None);
    }
}
