//! `run`: the collector as one future: read inputs and poll APIs, normalise, spool, ship, report.

use crate::config::CollectorConfig;
use crate::deadletter::DeadLetterFile;
use crate::error::CollectorError;
use crate::files::read_inputs;
use crate::poll;
use crate::shipper;
use crate::sink::Sink;
use crate::spool::Spool;
use crate::stats::{Report, Stats};
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use crate::files::newest_click_ms;

/// Runs the collector until its inputs are done (`once`, `dry_run`) or `shutdown` fires.
///
/// # Errors
/// When an input is missing, the spool or dead-letter file cannot be written, or (`once`)
/// not everything was acknowledged before the deadline.
pub async fn run(
    config: CollectorConfig,
    shutdown: CancellationToken,
) -> Result<Report, CollectorError> {
    let stats = Arc::new(Stats::default());
    if config.once || config.dry_run {
        // Misnamed inputs are an error at once, not something to wait for.
        for spec in &config.inputs {
            if spec.files().map_err(CollectorError::Input)?.is_empty() {
                warn!(input = %spec.pattern, "input matches no file");
            }
        }
    }

    if config.dry_run {
        let dead = match &config.dead_letter {
            Some(p) => Some(Arc::new(open_dead_letters(p)?)),
            None => None,
        };
        let sink = Sink::new(&config, None, dead, stats.clone(), shutdown.clone());
        read_inputs(&config, &sink).await?;
        return Ok(stats.report());
    }

    let dir = config.spool_dir.clone();
    let cache = config.spool_cache_capacity;
    let spool = tokio::task::spawn_blocking(move || Spool::open(&dir, cache))
        .await
        .map_err(|e| CollectorError::Input(format!("spool open task failed: {e}")))??;
    let spool = Arc::new(spool);
    let dead = Arc::new(open_dead_letters(&config.dead_letter_path())?);
    info!(collector = spool.collector_id(), spool = %config.spool_dir.display(), queued = spool.depth(), "collector started");

    if let Some(addr) = config.metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| CollectorError::Input(format!("cannot serve metrics on {addr}: {e}")))?;
        tokio::spawn(crate::metrics::serve(
            listener,
            stats.clone(),
            spool.clone(),
            shutdown.clone(),
        ));
    }
    let ship_token = CancellationToken::new();
    let shipper = tokio::spawn(shipper::run(
        spool.clone(),
        config.shipper.clone(),
        stats.clone(),
        ship_token.clone(),
    ));
    let sink = Sink::new(
        &config,
        Some(spool.clone()),
        Some(dead),
        stats.clone(),
        shutdown.clone(),
    );

    let result = async {
        let mut pollers = tokio::task::JoinSet::new();
        for p in &config.pollers {
            pollers.spawn(poll::run(
                p.clone(),
                sink.clone(),
                config.once,
                config.max_url_bytes,
            ));
        }
        read_inputs(&config, &sink).await?;
        while let Some(done) = pollers.join_next().await {
            done.map_err(|e| CollectorError::Input(format!("poller task failed: {e}")))??;
        }
        if shutdown.is_cancelled() {
            // Stopping is normal for a long-running collector: what was read is spooled and
            // checkpointed. For --once it means the job is not done.
            return if config.once {
                Err(CollectorError::Interrupted {
                    unacked: spool.depth(),
                })
            } else {
                Ok(())
            };
        }
        if config.once {
            wait_until_acknowledged(&spool, &config, &shutdown).await
        } else {
            shutdown.cancelled().await;
            Ok(())
        }
    }
    .await;

    ship_token.cancel();
    match shipper.await {
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(CollectorError::Input(format!("shipper task failed: {e}"))),
        Ok(Ok(())) => {}
    }
    spool.flush().await?;
    result?;
    Ok(stats.report())
}

fn open_dead_letters(path: &Path) -> Result<DeadLetterFile, CollectorError> {
    DeadLetterFile::open(path).map_err(|source| CollectorError::DeadLetter {
        path: path.to_owned(),
        source,
    })
}

async fn wait_until_acknowledged(
    spool: &Spool,
    config: &CollectorConfig,
    shutdown: &CancellationToken,
) -> Result<(), CollectorError> {
    let mut depth = spool.watch_depth();
    let wait = depth.wait_for(|d| *d == 0);
    tokio::select! {
        _ = wait => Ok(()),
        _ = tokio::time::sleep(config.once_deadline) => Err(CollectorError::Deadline {
            unacked: spool.depth(),
            waited: config.once_deadline,
            endpoint: config.shipper.endpoint.clone(),
        }),
        _ = shutdown.cancelled() => Err(CollectorError::Interrupted { unacked: spool.depth() }),
    }
}
