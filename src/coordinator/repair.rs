//! Read repair: after a read, every replica whose copy lacks part of the
//! merge of all the copies read (late answers included) is sent that merge.

use std::sync::atomic::Ordering;

use tracing::{debug, warn};

use super::Coordinator;
use super::plan::Target;
use crate::object::Object;

/// The merge of every copy the replicas returned.
pub fn merge_replies(replies: &[(Target, Option<Object>)]) -> Option<Object> {
    replies.iter().fold(None, |acc, (_, o)| {
        Object::merge_opt(acc.as_ref(), o.as_ref())
    })
}

/// True when some reply lacks part of `merged`.
pub fn needs_repair(replies: &[(Target, Option<Object>)], merged: Option<&Object>) -> bool {
    let Some(merged) = merged else {
        return false;
    };
    replies
        .iter()
        .any(|(_, o)| !o.as_ref().is_some_and(|o| o.supersedes(merged)))
}

/// Sends the merge of every reply to the replicas whose copy lacked part of it.
pub async fn read_repair(coord: &Coordinator, key: &[u8], replies: Vec<(Target, Option<Object>)>) {
    let Some(merged) = merge_replies(&replies) else {
        return;
    };
    for (t, obj) in replies {
        if obj.as_ref().is_some_and(|o| o.supersedes(&merged)) {
            continue;
        }
        debug!(key = %String::from_utf8_lossy(key), node = %t.node, "read repair");
        coord.stats().read_repairs.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = coord.replicate_to(&t, key, &merged).await {
            warn!(key = %String::from_utf8_lossy(key), node = %t.node, cause = %e, "read repair failed");
        }
    }
}
