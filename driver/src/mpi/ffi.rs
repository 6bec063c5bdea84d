//! The thin MPI binding: Open MPI's `libmpi.so`, loaded at run time with
//! `dlopen`, so building mlpdrive never needs MPI installed and a run
//! outside `mpirun` never loads it.
//!
//! Only the handful of calls mlpdrive needs are bound: init (thread level
//! SERIALIZED), rank, size, barrier, allreduce of `int`s with MPI_MAX (always
//! as the nonblocking `MPI_Iallreduce`, completed by `MPI_Wait` or polled with
//! `MPI_Test`: nonblocking and blocking collectives never match each other, so
//! every allreduce is the nonblocking kind), broadcast of bytes from rank 0,
//! gather of the byte lengths and gatherv of the bytes to rank 0, abort and
//! finalize.
//! Every call goes through [`Mpi`], which holds a lock: MPI is asked for
//! SERIALIZED, so no two threads may be inside MPI at once.
//!
//! Handles: Open MPI's `MPI_Comm`, `MPI_Datatype` and `MPI_Op` are
//! pointers, and the predefined ones (`MPI_COMM_WORLD`, `MPI_BYTE`,
//! `MPI_INT`, `MPI_MAX`) are the addresses of exported objects
//! (`ompi_mpi_comm_world`, …). MPICH and its relatives use integer handles
//! instead; they are refused before this module is reached (see
//! `super::detect`), because only Open MPI is tested.

use std::ffi::{c_char, c_int, c_void};
use std::sync::Mutex;

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW, Symbol};

type Handle = *mut c_void;

/// `MPI_THREAD_SERIALIZED` in Open MPI's mpi.h.
const MPI_THREAD_SERIALIZED: c_int = 2;
/// `MPI_SUCCESS`.
const MPI_SUCCESS: c_int = 0;

/// Library names tried in order when `MLPDRIVE_MPI_LIB` is not set:
/// Open MPI 4 and 5 both ship `libmpi.so.40`; the bare name needs the
/// -dev package.
const LIB_NAMES: &[&str] = &["libmpi.so.40", "libmpi.so"];

type InitThreadFn = unsafe extern "C" fn(*mut c_int, *mut *mut *mut c_char, c_int, *mut c_int) -> c_int;
type BarrierFn = unsafe extern "C" fn(Handle) -> c_int;
type CommIntFn = unsafe extern "C" fn(Handle, *mut c_int) -> c_int;
type IallreduceFn =
    unsafe extern "C" fn(*const c_void, *mut c_void, c_int, Handle, Handle, Handle, *mut Handle) -> c_int;
type TestFn = unsafe extern "C" fn(*mut Handle, *mut c_int, *mut c_void) -> c_int;
type WaitFn = unsafe extern "C" fn(*mut Handle, *mut c_void) -> c_int;
type BcastFn = unsafe extern "C" fn(*mut c_void, c_int, Handle, c_int, Handle) -> c_int;
type GatherFn = unsafe extern "C" fn(*const c_void, c_int, Handle, *mut c_void, c_int, Handle, c_int, Handle) -> c_int;
type GathervFn = unsafe extern "C" fn(
    *const c_void,
    c_int,
    Handle,
    *mut c_void,
    *const c_int,
    *const c_int,
    Handle,
    c_int,
    Handle,
) -> c_int;
type AbortFn = unsafe extern "C" fn(Handle, c_int) -> c_int;
type FinalizeFn = unsafe extern "C" fn() -> c_int;

/// The bound functions and predefined handles.
struct Api {
    init_thread: InitThreadFn,
    comm_rank: CommIntFn,
    comm_size: CommIntFn,
    barrier: BarrierFn,
    iallreduce: IallreduceFn,
    test: TestFn,
    wait: WaitFn,
    bcast: BcastFn,
    gather: GatherFn,
    gatherv: GathervFn,
    abort: AbortFn,
    finalize: FinalizeFn,
    comm_world: Handle,
    byte: Handle,
    int: Handle,
    op_max: Handle,
}

/// A loaded and initialised MPI library.
pub struct Mpi {
    api: Mutex<Api>,
    /// Copies of `Api::abort` and `Api::comm_world` for [`Mpi::abort`],
    /// which must not wait for the lock.
    abort_fn: AbortFn,
    abort_world: Handle,
    /// Keeps the library mapped for as long as the function pointers live.
    _lib: Library,
}

// SAFETY: the raw handles are addresses of objects inside the loaded
// library, valid for its lifetime (which `_lib` bounds); every use goes
// through the mutex, matching the SERIALIZED thread level asked of MPI.
unsafe impl Send for Mpi {}
// SAFETY: as above: all access is serialised by the mutex.
unsafe impl Sync for Mpi {}

fn check(what: &str, rc: c_int) -> Result<(), String> {
    if rc == MPI_SUCCESS { Ok(()) } else { Err(format!("{what} failed with MPI error code {rc}")) }
}

impl Mpi {
    /// Loads Open MPI (`MLPDRIVE_MPI_LIB` names the library file if set)
    /// and calls `MPI_Init_thread`.
    pub fn load_and_init() -> Result<Mpi, String> {
        let names: Vec<String> = match std::env::var("MLPDRIVE_MPI_LIB") {
            Ok(n) if !n.is_empty() => vec![n],
            _ => LIB_NAMES.iter().map(|s| s.to_string()).collect(),
        };
        let mut tried = Vec::new();
        let mut lib = None;
        for n in &names {
            // SAFETY: loading a shared library runs its initialisers; Open
            // MPI's are safe to run once per process. RTLD_GLOBAL because
            // Open MPI's own plugins (opened by it later) resolve symbols
            // of libmpi from the global scope.
            match unsafe { Library::open(Some(n), RTLD_NOW | RTLD_GLOBAL) } {
                Ok(l) => {
                    lib = Some(l);
                    break;
                }
                Err(e) => tried.push(format!("{n}: {e}")),
            }
        }
        let lib = lib.ok_or_else(|| {
            format!(
                "cannot load the MPI library ({}); install Open MPI (Debian: apt-get install openmpi-bin) or set \
                 MLPDRIVE_MPI_LIB to the path of libmpi.so",
                tried.join("; ")
            )
        })?;
        let api = Api::bind(&lib)?;
        let mut provided: c_int = 0;
        // SAFETY: MPI-2 allows null argc/argv; `provided` is a valid out
        // pointer; called once per process (World::init guards that).
        let rc = unsafe {
            (api.init_thread)(std::ptr::null_mut(), std::ptr::null_mut(), MPI_THREAD_SERIALIZED, &mut provided)
        };
        check("MPI_Init_thread", rc)?;
        if provided < MPI_THREAD_SERIALIZED {
            return Err(format!(
                "this MPI provides thread level {provided}, mlpdrive needs MPI_THREAD_SERIALIZED ({MPI_THREAD_SERIALIZED})"
            ));
        }
        let (abort_fn, abort_world) = (api.abort, api.comm_world);
        Ok(Mpi { api: Mutex::new(api), abort_fn, abort_world, _lib: lib })
    }

    fn api(&self) -> std::sync::MutexGuard<'_, Api> {
        // A panic while holding the lock leaves MPI itself consistent (the
        // call either returned or not); keep using it.
        self.api.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This process's rank in MPI_COMM_WORLD.
    pub fn rank(&self) -> Result<usize, String> {
        let api = self.api();
        let mut r: c_int = 0;
        // SAFETY: valid communicator handle and out pointer.
        check("MPI_Comm_rank", unsafe { (api.comm_rank)(api.comm_world, &mut r) })?;
        Ok(r as usize)
    }

    /// The number of ranks in MPI_COMM_WORLD.
    pub fn size(&self) -> Result<usize, String> {
        let api = self.api();
        let mut n: c_int = 0;
        // SAFETY: valid communicator handle and out pointer.
        check("MPI_Comm_size", unsafe { (api.comm_size)(api.comm_world, &mut n) })?;
        Ok(n as usize)
    }

    /// `MPI_Barrier` on MPI_COMM_WORLD. Collective.
    pub fn barrier(&self) -> Result<(), String> {
        let api = self.api();
        // SAFETY: valid communicator handle.
        check("MPI_Barrier", unsafe { (api.barrier)(api.comm_world) })
    }

    /// Element-wise maximum of `values` over all ranks (every rank gets
    /// it). Collective: every rank must call it (or [`Mpi::start_allreduce_max`])
    /// with the same length.
    pub fn allreduce_max(&self, values: &[i32]) -> Result<Vec<i32>, String> {
        let mut pending = self.start_allreduce_max(values)?;
        let api = self.api();
        // SAFETY: `pending.request` is the live request of the Iallreduce
        // started above, whose buffers `pending` owns; MPI_STATUS_IGNORE is
        // a null pointer in Open MPI.
        let rc = unsafe { (api.wait)(&mut pending.request, std::ptr::null_mut()) };
        pending.done = true;
        check("MPI_Wait", rc)?;
        Ok(std::mem::take(&mut pending.recv))
    }

    /// Starts an element-wise maximum over all ranks (`MPI_Iallreduce`);
    /// [`Mpi::test`] polls it. Collective, like [`Mpi::allreduce_max`].
    pub fn start_allreduce_max(&self, values: &[i32]) -> Result<PendingAllreduce, String> {
        let api = self.api();
        let n = c_int::try_from(values.len()).map_err(|_| "allreduce: too many values".to_string())?;
        let mut p = PendingAllreduce {
            send: values.to_vec(),
            recv: vec![0i32; values.len()],
            request: std::ptr::null_mut(),
            done: false,
        };
        // SAFETY: send and receive buffers hold `n` ints each and do not
        // overlap; they are heap buffers owned by `p`, which does not let
        // them go before the request completed (see its Drop); handles are
        // Open MPI's predefined objects; `request` is a valid out pointer.
        let rc = unsafe {
            (api.iallreduce)(
                p.send.as_ptr().cast(),
                p.recv.as_mut_ptr().cast(),
                n,
                api.int,
                api.op_max,
                api.comm_world,
                &mut p.request,
            )
        };
        if rc != MPI_SUCCESS {
            p.done = true;
        }
        check("MPI_Iallreduce", rc)?;
        Ok(p)
    }

    /// Polls a started allreduce: `Some(result)` once it completed.
    pub fn test(&self, p: &mut PendingAllreduce) -> Result<Option<Vec<i32>>, String> {
        if p.done {
            return Err("allreduce: already completed".into());
        }
        let api = self.api();
        let mut flag: c_int = 0;
        // SAFETY: `p.request` is a live request (not completed yet, see
        // `done`); `flag` is a valid out pointer; MPI_STATUS_IGNORE is null.
        let rc = unsafe { (api.test)(&mut p.request, &mut flag, std::ptr::null_mut()) };
        if rc != MPI_SUCCESS {
            p.done = true;
        }
        check("MPI_Test", rc)?;
        if flag == 0 {
            return Ok(None);
        }
        p.done = true;
        Ok(Some(std::mem::take(&mut p.recv)))
    }

    /// Rank 0's `bytes` on every rank (`MPI_Bcast` of the length, then of
    /// the bytes). Collective; other ranks' `bytes` are ignored.
    pub fn broadcast_bytes(&self, bytes: &[u8], rank: usize) -> Result<Vec<u8>, String> {
        let api = self.api();
        let mut len =
            c_int::try_from(bytes.len()).map_err(|_| format!("broadcast: {} bytes is too much", bytes.len()))?;
        // SAFETY: one int, at a valid address, on every rank.
        let rc = unsafe { (api.bcast)((&mut len as *mut c_int).cast(), 1, api.int, 0, api.comm_world) };
        check("MPI_Bcast", rc)?;
        let mut buf = if rank == 0 { bytes.to_vec() } else { vec![0u8; len.max(0) as usize] };
        // SAFETY: `buf` holds `len` bytes on every rank (rank 0's data, a
        // zeroed buffer of the broadcast length elsewhere).
        let rc = unsafe { (api.bcast)(buf.as_mut_ptr().cast(), len, api.byte, 0, api.comm_world) };
        check("MPI_Bcast", rc)?;
        Ok(buf)
    }

    /// Gathers every rank's `bytes` at rank 0 (in rank order). Collective.
    /// Returns `Some` on rank 0, `None` elsewhere.
    pub fn gather_bytes(&self, bytes: &[u8], rank: usize, size: usize) -> Result<Option<Vec<Vec<u8>>>, String> {
        let api = self.api();
        let len = c_int::try_from(bytes.len()).map_err(|_| format!("gather: {} bytes is too much", bytes.len()))?;
        let root = rank == 0;
        let mut lens = vec![0 as c_int; if root { size } else { 0 }];
        // SAFETY: one int sent per rank; at the root `lens` has room for
        // `size` ints (ignored elsewhere, where it may be empty).
        let rc = unsafe {
            (api.gather)(
                (&len as *const c_int).cast(),
                1,
                api.int,
                lens.as_mut_ptr().cast(),
                1,
                api.int,
                0,
                api.comm_world,
            )
        };
        check("MPI_Gather", rc)?;
        let mut displs = Vec::with_capacity(lens.len());
        let mut total: usize = 0;
        for l in &lens {
            displs.push(c_int::try_from(total).map_err(|_| "gather: more than 2 GiB in total".to_string())?);
            total += *l as usize;
        }
        c_int::try_from(total).map_err(|_| "gather: more than 2 GiB in total".to_string())?;
        let mut all = vec![0u8; total];
        // SAFETY: this rank sends `len` bytes from `bytes`; at the root
        // `all` holds the sum of `lens` bytes laid out at `displs`, as
        // gathered just before (arguments are ignored on other ranks).
        let rc = unsafe {
            (api.gatherv)(
                bytes.as_ptr().cast(),
                len,
                api.byte,
                all.as_mut_ptr().cast(),
                lens.as_ptr(),
                displs.as_ptr(),
                api.byte,
                0,
                api.comm_world,
            )
        };
        check("MPI_Gatherv", rc)?;
        if !root {
            return Ok(None);
        }
        Ok(Some(lens.iter().zip(&displs).map(|(&l, &d)| all[d as usize..d as usize + l as usize].to_vec()).collect()))
    }

    /// Ends every rank of the job (mpirun kills the others). Does not
    /// take the lock: the thread holding it may be the one that panicked
    /// or is stuck inside MPI.
    pub fn abort(&self, code: i32) {
        // SAFETY: MPI_Abort may be called from any thread once MPI is
        // initialised; `abort_world` is the predefined communicator,
        // copied at bind time. It does not return on success.
        unsafe { (self.abort_fn)(self.abort_world, code) };
    }

    /// `MPI_Finalize`; after it no MPI call may be made.
    pub fn finalize(&self) -> Result<(), String> {
        let api = self.api();
        // SAFETY: called once, after the last collective.
        check("MPI_Finalize", unsafe { (api.finalize)() })
    }
}

/// A started `MPI_Iallreduce`: owns its buffers until MPI is done with
/// them.
pub struct PendingAllreduce {
    send: Vec<i32>,
    recv: Vec<i32>,
    request: Handle,
    done: bool,
}

// SAFETY: the request handle is only used through `Mpi`, whose lock
// serialises every MPI call; the buffers are plain heap memory.
unsafe impl Send for PendingAllreduce {}

impl Drop for PendingAllreduce {
    /// MPI still writes into `recv` until the request completes, so a
    /// pending allreduce is completed (waited for) before its buffers go.
    /// It completes once every rank made its matching call, which every
    /// rank does (see `super::World`).
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(mpi) = super::MPI.get() {
            let api = mpi.api();
            // SAFETY: a live request whose buffers are still owned here.
            unsafe { (api.wait)(&mut self.request, std::ptr::null_mut()) };
        }
    }
}

impl Api {
    fn bind(lib: &Library) -> Result<Api, String> {
        fn func<T: Copy>(lib: &Library, name: &str) -> Result<T, String> {
            // SAFETY: the caller names the symbol with its C signature from
            // mpi.h (the type aliases above).
            let s: Symbol<T> = unsafe { lib.get(name.as_bytes()) }
                .map_err(|e| format!("the MPI library has no {name} ({e}); mlpdrive supports Open MPI"))?;
            Ok(*s)
        }
        fn object(lib: &Library, name: &str) -> Result<Handle, String> {
            // SAFETY: a data symbol; its address is the handle.
            let s: Symbol<Handle> = unsafe { lib.get(name.as_bytes()) }.map_err(|e| {
                format!(
                    "the MPI library has no {name} ({e}): it is not Open MPI, which is the only MPI mlpdrive supports"
                )
            })?;
            Ok(*s)
        }
        Ok(Api {
            init_thread: func(lib, "MPI_Init_thread")?,
            comm_rank: func(lib, "MPI_Comm_rank")?,
            comm_size: func(lib, "MPI_Comm_size")?,
            barrier: func(lib, "MPI_Barrier")?,
            iallreduce: func(lib, "MPI_Iallreduce")?,
            test: func(lib, "MPI_Test")?,
            wait: func(lib, "MPI_Wait")?,
            bcast: func(lib, "MPI_Bcast")?,
            gather: func(lib, "MPI_Gather")?,
            gatherv: func(lib, "MPI_Gatherv")?,
            abort: func(lib, "MPI_Abort")?,
            finalize: func(lib, "MPI_Finalize")?,
            comm_world: object(lib, "ompi_mpi_comm_world")?,
            byte: object(lib, "ompi_mpi_byte")?,
            int: object(lib, "ompi_mpi_int")?,
            op_max: object(lib, "ompi_mpi_op_max")?,
        })
    }
}
