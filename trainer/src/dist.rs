//! Data parallelism: one process per rank, started by `mpirun` or `srun`, over MPI (Open MPI
//! through the `mpi` crate, behind the `mpi` feature).
//!
//! Every rank builds the same model, reads the same data in the same order and draws the same
//! masks: a step's global batch (its micro-batches) is known to all of them, and rank `r` runs
//! forward and backward on micro-batches `m` with `m mod ranks = r` only. The gradients are then
//! summed over the ranks in a few large buckets ([`all_reduce_grads`]), so every rank holds the
//! gradient a single process accumulates over the whole batch and applies the identical optimizer
//! step. Nothing a checkpoint holds depends on the rank or the number of ranks (data order follows
//! the global step), so a run resumes on any number of ranks. Rank 0 alone writes checkpoints,
//! metrics and plots.
//!
//! A rank that fails (an error or a panic) aborts the whole job with `MPI_Abort`, so no rank is
//! left waiting in a collective; a rank killed outright is noticed by the launcher, which stops
//! the others.
//!
//! On NVIDIA GPUs the gradient buckets can be summed by NCCL instead (`TRAINER_ALLREDUCE=nccl`,
//! a trainer built with the `nccl` feature): each rank opens the GPU of its local rank, rank 0
//! makes the NCCL id and MPI broadcasts it, and each bucket is copied to the GPU, summed in place
//! by NCCL (NVLink, InfiniBand) and copied back. It is built but has never run here: this
//! project's machines have no GPU.

use std::cell::RefCell;
use std::time::Instant;

use kernels::Backend;
use runtime::Encoder;

use crate::backward::Grads;
use crate::{Error, Result};

/// Values per allreduce call: 32 MiB of f32, so that ModernBERT-base's 150 M gradients go in
/// about 18 calls.
pub const BUCKET_VALUES: usize = 8 << 20;

/// This process's place in the job.
pub struct Dist {
    rank: usize,
    size: usize,
    #[cfg(feature = "mpi")]
    mpi: Option<mpi_world::World>,
    /// Seconds and bytes spent in allreduce since the last `take_traffic`.
    traffic: RefCell<Traffic>,
}

/// Time and volume of the collectives.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Traffic {
    pub seconds: f64,
    pub bytes: u64,
    pub calls: u64,
}

/// The variables a launcher sets in each rank it starts (Open MPI's mpirun, PMIx and PMI-2 under
/// srun).
const LAUNCHED: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"];

/// How many tasks srun started for this step, when it started several (each would otherwise
/// train alone on the same output).
fn slurm_tasks() -> Option<usize> {
    std::env::var_os("SLURM_PROCID")?;
    let n: usize = std::env::var("SLURM_STEP_NUM_TASKS").ok()?.parse().ok()?;
    (n > 1).then_some(n)
}

impl Dist {
    /// A single process.
    pub fn single() -> Dist {
        Dist {
            rank: 0,
            size: 1,
            #[cfg(feature = "mpi")]
            mpi: None,
            traffic: RefCell::default(),
        }
    }

    /// The job this process was started in: MPI's world when a launcher started it (`mpirun`,
    /// `srun`), else a single process. A launch under several ranks by a trainer built without
    /// the `mpi` feature is refused (each rank would train alone).
    pub fn from_environment() -> Result<Dist> {
        let launched = LAUNCHED.iter().any(|v| std::env::var_os(v).is_some());
        let srun_tasks = slurm_tasks();
        if !launched && srun_tasks.is_none() {
            return Ok(Dist::single());
        }
        #[cfg(feature = "mpi")]
        {
            let world = mpi_world::World::init()?;
            let (rank, size) = (world.rank(), world.size());
            if let Some(n) = srun_tasks.filter(|&n| n != size) {
                let message = format!(
                    "srun started {n} tasks but MPI sees {size} rank(s): start the trainer with `srun --mpi=pmix` (Open MPI needs PMIx), or with mpirun"
                );
                if size > 1 {
                    eprintln!("error on rank {rank}: {message}");
                    world.abort(2);
                }
                return Err(Error::Input(message));
            }
            Ok(Dist { rank, size, mpi: Some(world), traffic: RefCell::default() })
        }
        #[cfg(not(feature = "mpi"))]
        {
            let size: usize = std::env::var("OMPI_COMM_WORLD_SIZE")
                .or_else(|_| std::env::var("PMI_SIZE"))
                .ok()
                .and_then(|s| s.parse().ok())
                .or(srun_tasks)
                .unwrap_or(if std::env::var_os("PMIX_RANK").is_some() { 2 } else { 1 });
            if size > 1 {
                return Err(Error::Input(format!(
                    "started as one of {size} ranks, but this trainer was built without MPI: build it with `cargo build --release -p trainer --features mpi` (needs Open MPI's libopenmpi-dev and libclang)"
                )));
            }
            Ok(Dist::single())
        }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }
    pub fn size(&self) -> usize {
        self.size
    }
    /// Rank 0: the one that writes.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Does this rank compute micro-batch `m` of a step?
    pub fn owns(&self, m: usize) -> bool {
        m % self.size == self.rank
    }

    /// Sum `values` over every rank, in place, in buckets of [`BUCKET_VALUES`].
    pub fn sum_f32(&self, values: &mut [f32]) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        let start = Instant::now();
        for bucket in values.chunks_mut(BUCKET_VALUES) {
            self.reduce_f32(bucket)?;
        }
        let mut t = self.traffic.borrow_mut();
        t.seconds += start.elapsed().as_secs_f64();
        t.bytes += (values.len() * 4) as u64;
        t.calls += values.len().div_ceil(BUCKET_VALUES) as u64;
        Ok(())
    }

    /// Sum a few f64 counters over every rank (losses, hits, token counts).
    pub fn sum_f64(&self, values: &mut [f64]) {
        if self.size == 1 {
            return;
        }
        #[cfg(feature = "mpi")]
        if let Some(w) = &self.mpi {
            w.sum_f64(values);
        }
        #[cfg(not(feature = "mpi"))]
        let _ = values;
    }

    fn reduce_f32(&self, bucket: &mut [f32]) -> Result<()> {
        #[cfg(feature = "mpi")]
        if let Some(w) = &self.mpi {
            return w.sum_f32(bucket);
        }
        let _ = bucket;
        Ok(())
    }

    /// Stop the whole job: every rank, with `code` (a failure on one rank must not leave the
    /// others waiting in a collective).
    pub fn abort(&self, code: i32) -> ! {
        #[cfg(feature = "mpi")]
        if let Some(w) = &self.mpi {
            w.abort(code);
        }
        std::process::exit(code)
    }

    /// The collectives' time and volume since the last call.
    pub fn take_traffic(&self) -> Traffic {
        std::mem::take(&mut *self.traffic.borrow_mut())
    }
}

/// The model's parameters, in checkpoint order: the order every rank packs its gradients in.
pub fn parameter_shapes<B: Backend>(be: &B, model: &mut dyn Encoder<B>) -> Vec<(String, Vec<usize>)> {
    model.parameters_mut().into_iter().map(|(n, t)| (n, be.shape(t).to_vec())).collect()
}

/// Sum the gradients over every rank: packed in checkpoint order into one buffer (a gradient a
/// rank lacks counts as zero; one that no rank has stays absent, as in a single process), summed
/// in buckets of [`BUCKET_VALUES`], and put back.
pub fn all_reduce_grads<B: Backend>(be: &B, dist: &Dist, params: &[(String, Vec<usize>)], grads: &mut Grads<B>) -> Result<()> {
    if dist.size() == 1 {
        return Ok(());
    }
    let total: usize = params.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    // One presence flag per parameter, then every gradient.
    let mut flat = Vec::with_capacity(params.len() + total);
    flat.extend(params.iter().map(|(n, _)| if grads.get(n).is_some() { 1.0f32 } else { 0.0 }));
    for (name, shape) in params {
        let n: usize = shape.iter().product();
        match grads.get(name) {
            Some(g) => {
                let v = kernels::block_on(be.read(g))?;
                if v.len() != n {
                    return Err(Error::Input(format!("the gradient of {name} holds {} values, the parameter {n}", v.len())));
                }
                flat.extend_from_slice(&v);
            }
            None => flat.resize(flat.len() + n, 0.0),
        }
    }
    dist.sum_f32(&mut flat)?;
    let (flags, mut rest) = flat.split_at(params.len());
    grads.clear();
    for ((name, shape), &flag) in params.iter().zip(flags) {
        let n: usize = shape.iter().product();
        let (g, tail) = rest.split_at(n);
        rest = tail;
        if flag > 0.0 {
            grads.tensors.insert(name.clone(), be.upload(g, shape)?);
        }
    }
    Ok(())
}

#[cfg(feature = "mpi")]
mod mpi_world {
    use std::cell::RefCell;

    use mpi::collective::SystemOperation;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;

    use crate::{Error, Result};

    pub struct World {
        // Dropping the universe calls MPI_Finalize: it lives as long as the world.
        _universe: mpi::environment::Universe,
        world: SimpleCommunicator,
        // rsmpi has no in-place allreduce: the send side is a copy.
        scratch: RefCell<Vec<f32>>,
        /// NCCL sums the f32 buckets when asked for (`TRAINER_ALLREDUCE=nccl`).
        #[cfg(feature = "nccl")]
        nccl: Option<super::nccl::Nccl>,
    }

    impl World {
        pub fn init() -> Result<World> {
            // Only the main thread calls MPI (the kernels' worker threads never do).
            let (universe, _) =
                mpi::initialize_with_threading(mpi::Threading::Funneled).ok_or_else(|| Error::Input("MPI was already initialised in this process".into()))?;
            let world = universe.world();
            // A panic would unwind into MPI_Finalize while the other ranks wait in a collective:
            // the job would hang. Abort it instead, after the usual message.
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                previous(info);
                // SAFETY: MPI is initialised (this hook is set after it) and MPI_Abort takes the
                // world communicator handle and an error code.
                unsafe {
                    mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, 101);
                }
                std::process::abort();
            }));
            let allreduce = std::env::var("TRAINER_ALLREDUCE").unwrap_or_else(|_| "mpi".into());
            // A rank whose NCCL set-up fails stops the job: the others would wait for it in the
            // id's broadcast or in NCCL's own set-up.
            #[cfg(feature = "nccl")]
            let nccl = match allreduce.as_str() {
                "nccl" => match super::nccl::Nccl::init(&world) {
                    Ok(n) => Some(n),
                    Err(e) if world.size() > 1 => {
                        eprintln!("error on rank {}: {e}", world.rank());
                        world.abort(2)
                    }
                    Err(e) => return Err(e),
                },
                _ => None,
            };
            match allreduce.as_str() {
                "mpi" => {}
                "nccl" if cfg!(feature = "nccl") => {}
                "nccl" => {
                    return Err(Error::Input("TRAINER_ALLREDUCE=nccl: this trainer was built without NCCL (cargo build -p trainer --features nccl)".into()))
                }
                other => return Err(Error::Input(format!("TRAINER_ALLREDUCE={other:?}: expected mpi or nccl"))),
            }
            Ok(World {
                _universe: universe,
                world,
                scratch: RefCell::new(Vec::new()),
                #[cfg(feature = "nccl")]
                nccl,
            })
        }

        pub fn rank(&self) -> usize {
            self.world.rank() as usize
        }
        pub fn size(&self) -> usize {
            self.world.size() as usize
        }

        pub fn sum_f32(&self, bucket: &mut [f32]) -> Result<()> {
            #[cfg(feature = "nccl")]
            if let Some(n) = &self.nccl {
                return n.sum_f32(bucket);
            }
            let mut send = self.scratch.borrow_mut();
            send.clear();
            send.extend_from_slice(bucket);
            self.world.all_reduce_into(&send[..], bucket, SystemOperation::sum());
            Ok(())
        }

        pub fn sum_f64(&self, values: &mut [f64]) {
            let send = values.to_vec();
            self.world.all_reduce_into(&send[..], values, SystemOperation::sum());
        }

        pub fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }
    }
}

/// NCCL between the ranks' GPUs, bootstrapped over MPI.
#[cfg(feature = "nccl")]
mod nccl {
    use std::sync::Arc;

    use cudarc::driver::{CudaContext, CudaStream};
    use cudarc::nccl::safe::{Comm, Id, ReduceOp};
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;

    use crate::{Error, Result};

    pub struct Nccl {
        stream: Arc<CudaStream>,
        comm: Comm,
    }

    fn cuda(what: &str, e: impl std::fmt::Debug) -> Error {
        Error::Input(format!("NCCL all-reduce: {what} failed ({e:?})"))
    }

    impl Nccl {
        /// Open the GPU of this rank's place on its node (the launcher's local rank, modulo the
        /// GPUs it sees) and join the NCCL communicator whose id rank 0 broadcasts over MPI.
        pub fn init(world: &SimpleCommunicator) -> Result<Nccl> {
            let local: usize =
                ["OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"].iter().find_map(|v| std::env::var(v).ok()?.parse().ok()).unwrap_or(0);
            // cudarc loads CUDA and NCCL at first use and panics when they are missing: ask first.
            // SAFETY: these only try to open the shared libraries.
            let (has_cuda, has_nccl) = unsafe { (cudarc::driver::sys::is_culib_present(), cudarc::nccl::sys::is_culib_present()) };
            if !has_cuda || !has_nccl {
                return Err(Error::Input(format!(
                    "TRAINER_ALLREDUCE=nccl: {} not found (libcuda.so from the NVIDIA driver, libnccl.so from NCCL; set LD_LIBRARY_PATH), or use MPI's all-reduce",
                    if has_cuda { "NCCL is" } else { "CUDA is" }
                )));
            }
            let gpus = CudaContext::device_count().map_err(|e| cuda("counting the GPUs", e))?.max(1) as usize;
            let ctx = CudaContext::new(local % gpus).map_err(|e| cuda("opening the GPU", e))?;
            let stream = ctx.default_stream();
            let (rank, size) = (world.rank() as usize, world.size() as usize);
            let mut id = [0u8; 128];
            if rank == 0 {
                let made = Id::new().map_err(|e| cuda("making the NCCL id", e))?;
                for (b, c) in id.iter_mut().zip(made.internal()) {
                    *b = *c as u8;
                }
            }
            world.process_at_rank(0).broadcast_into(&mut id[..]);
            let id = Id::uninit(id.map(|b| b as std::ffi::c_char));
            let comm = Comm::from_rank(stream.clone(), rank, size, id).map_err(|e| cuda("joining the communicator", e))?;
            Ok(Nccl { stream, comm })
        }

        /// Sum one bucket over the ranks' GPUs: to the GPU, summed in place, back.
        pub fn sum_f32(&self, bucket: &mut [f32]) -> Result<()> {
            let mut on_gpu = self.stream.clone_htod(bucket).map_err(|e| cuda("copying to the GPU", e))?;
            self.comm.all_reduce_in_place(&mut on_gpu, &ReduceOp::Sum).map_err(|e| cuda("ncclAllReduce", e))?;
            self.stream.memcpy_dtoh(&on_gpu, bucket).map_err(|e| cuda("copying from the GPU", e))?;
            self.stream.synchronize().map_err(|e| cuda("synchronising", e))
        }
    }
}
