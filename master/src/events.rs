//! Job and task state changes fanned out to `subscribe_events` subscribers.
//!
//! The store publishes after each commit; a subscriber that falls more than
//! [`EVENT_BUFFER`] events behind is ended (with a final `End` event) rather than slowing the
//! master down. Events are per master process: with several masters on one PostgreSQL, each
//! subscriber sees the changes made through its own master.

use pyti_wire::job::Event;
use tokio::sync::broadcast;

/// Events buffered per subscriber before it is considered lagging.
pub const EVENT_BUFFER: usize = 4096;

/// The fan-out point.
#[derive(Debug, Clone)]
pub struct EventHub {
    sender: broadcast::Sender<Event>,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub {
            sender: broadcast::channel(EVENT_BUFFER).0,
        }
    }
}

impl EventHub {
    /// Sends `event` to every current subscriber (none is fine).
    pub fn publish(&self, event: Event) {
        let _ = self.sender.send(event);
    }

    /// A new receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}
