//! The ops the model needs: one trait per kernel family (`LinearOps`, `AttentionOps`, …) over the
//! tensor types and transfers of `Storage`, and `Backend`, all of them together. The cubecl
//! backend implements each family's trait in that family's folder; the CPU backend in `cpu/`.
//!
//! Every op takes whole tensors in row-major layout and returns new ones. Activations are
//! 2-D `[rows, features]` over an unpadded batch: T tokens of B sequences laid end to end, with
//! `cu_seqlens` [B+1] marking where each sequence starts. No pad token is ever stored.
//!
//! Reading back is async (the browser cannot block); everything else only enqueues work.

use crate::Result;

/// How a backend stores float tensors. Arithmetic is f32 (accumulation always is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    /// IEEE half precision storage (GPU adapters with `shader-f16`).
    F16,
    /// bfloat16 storage (the CPU backend; products at twice the f32 rate with AVX512-BF16).
    BF16,
    /// The CPU backend's inference mode with int8 products: the encoder layers' weight matrices
    /// (`upload_linear_weight`) quantised per output channel, their activations per row at run
    /// time, i32 accumulation; every other parameter and product (embeddings, heads, attention)
    /// as in `BF16`.
    Int8,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Int8 => 1,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::Int8 => "int8",
        }
    }
}

/// What a backend runs on and what it can hold.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// `cpu`, `wgpu`, `cuda`.
    pub backend: &'static str,
    /// Adapter or CPU name.
    pub name: String,
    /// Largest tensor one kernel argument can bind, in bytes (`usize::MAX` on the CPU).
    pub max_binding_bytes: usize,
    /// Free-form details: limits, features, threads.
    pub details: Vec<(String, String)>,
}

/// The compute interface the encoder is written against: every family's ops over one storage.
/// It is implemented for every type that implements the parts; generic code bounds on
/// `B: Backend` and calls any op, code holding a concrete backend imports `kernels::prelude::*`.
///
/// Shapes: `x` [N, K] means N rows of K features. `w` weights follow PyTorch's `nn.Linear`
/// convention [out, in]. Index vectors (`Ids`) hold `u32`.
///
/// Training: the backward ops take the forward's f32 tensors (parameters uploaded with
/// `upload`/`upload_vec`, not `upload_weight`); gradients are f32 with the shape of what they
/// differentiate. Mixed precision: on a backend whose `dtype` is not f32 (CPU bf16, GPU f16),
/// `linear` and `matmul` multiply an f32 parameter as its rounding to `dtype` (the f32 tensor stays
/// the master copy the optimizer updates); every other op, gradient and optimizer state is f32.
pub trait Backend: Storage + EmbeddingOps + LinearOps + LayerNormOps + ElementwiseOps + RopeOps + AttentionOps + LossOps + ReduceOps + OptimOps {}

impl<T> Backend for T where T: Storage + EmbeddingOps + LinearOps + LayerNormOps + ElementwiseOps + RopeOps + AttentionOps + LossOps + ReduceOps + OptimOps {}

/// Storage: what a backend runs on, the tensor types, and moving data to, from and within the device..
#[allow(async_fn_in_trait)]
pub trait Storage: 'static {
    /// A float tensor on the device (stored f32; arithmetic f32).
    type Tensor: Clone;
    /// A `u32` vector on the device: token ids, row indices, labels.
    type Ids: Clone;
    /// An unpadded batch's layout on the device (cumulative offsets, positions, work lists).
    type Seqs;
    fn device_info(&self) -> DeviceInfo;
    /// How many values of `dtype` one kernel argument can bind (unbounded on the CPU): a tensor
    /// larger than that is processed in row chunks.
    fn max_binding_elements(&self, dtype: DType) -> usize {
        self.device_info().max_binding_bytes / dtype.size()
    }
    /// How `upload_weight` stores parameters (activations: `activation_dtype`).
    fn dtype(&self) -> DType {
        DType::F32
    }
    /// Copy host data to a new tensor of the given shape.
    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<Self::Tensor>;
    /// Like `upload`, taking ownership (the CPU backend keeps the vector without a copy).
    fn upload_vec(&self, data: Vec<f32>, shape: &[usize]) -> Result<Self::Tensor> {
        self.upload(&data, shape)
    }
    /// A model parameter, stored in the backend's weight precision (`dtype`). Ops accept weights
    /// where their documentation says `w`, `b` or `table`.
    fn upload_weight(&self, data: Vec<f32>, shape: &[usize]) -> Result<Self::Tensor> {
        self.upload_vec(data, shape)
    }
    /// The weight matrix [out, in] of one of the encoder layers' products (attention's QKV and
    /// output projections, the MLP's two): the products a backend in `DType::Int8` runs in int8.
    /// Every other backend and dtype stores it like `upload_weight`.
    fn upload_linear_weight(&self, data: Vec<f32>, shape: &[usize]) -> Result<Self::Tensor> {
        self.upload_weight(data, shape)
    }
    fn upload_ids(&self, data: &[u32]) -> Result<Self::Ids>;
    /// Describe an unpadded batch: `cu_seqlens` [B+1], strictly increasing, starting at 0.
    fn seqs(&self, cu_seqlens: &[u32]) -> Result<Self::Seqs>;
    fn shape<'a>(&self, t: &'a Self::Tensor) -> &'a [usize];
    /// How activations are stored (f32, or f16 on a GPU backend with f16 activations).
    fn activation_dtype(&self) -> DType {
        DType::F32
    }
    /// Device memory in bytes (in use now, peak reserved by the allocator), where the backend has
    /// a device; `None` on the CPU (whose memory is the process's RSS).
    fn device_memory(&self) -> Option<(u64, u64)> {
        None
    }
    /// Copy a tensor back to the host.
    async fn read(&self, t: &Self::Tensor) -> Result<Vec<f32>>;
    /// Rows start..end of x [N, C] → [end − start, C].
    fn slice_rows(&self, x: &Self::Tensor, start: usize, end: usize) -> Result<Self::Tensor>;
    /// Row blocks with the same column count stacked: [N_1, C], [N_2, C], … → [Σ N_i, C].
    fn concat_rows(&self, parts: &[Self::Tensor]) -> Result<Self::Tensor>;
}

/// Lookups, row gathers and pooling, and their backwards (`crate::embedding`).
pub trait EmbeddingOps: Storage {
    /// Row gather from an embedding table: table [V, H], ids [T] → [T, H].
    fn embedding(&self, table: &Self::Tensor, ids: &Self::Ids) -> Result<Self::Tensor>;
    /// Embedding sum: x [T, H] (an activation), table [R, H] (a weight), ids [T] (each < R)
    /// → x + table[ids] [T, H]. BERT's token-type and position embeddings. Backward: dy for x,
    /// `embedding_backward(ids, dy, R)` for the table.
    fn embedding_add(&self, x: &Self::Tensor, table: &Self::Tensor, ids: &Self::Ids) -> Result<Self::Tensor>;
    /// Row gather: x [N, H], rows [R] → [R, H].
    fn gather_rows(&self, x: &Self::Tensor, rows: &Self::Ids) -> Result<Self::Tensor>;
    /// Mean over each sequence's rows: x [T, H] → [B, H].
    fn mean_pool(&self, x: &Self::Tensor, seqs: &Self::Seqs) -> Result<Self::Tensor>;
    /// Backward of `embedding`, a scatter-add: ids [T] (as given to the forward, host copy),
    /// dy [T, H] → dtable [V, H], zero in the rows no id selects.
    fn embedding_backward(&self, ids: &[u32], dy: &Self::Tensor, vocab: usize) -> Result<Self::Tensor>;
    /// Backward of `mean_pool`: dy [B, H] → dx [T, H].
    fn mean_pool_backward(&self, dy: &Self::Tensor, seqs: &Self::Seqs) -> Result<Self::Tensor>;
    /// Backward of `gather_rows` for distinct rows: dy [R, H] → dx [n, H], dy's rows placed at
    /// `rows`, zero elsewhere.
    fn scatter_rows(&self, dy: &Self::Tensor, rows: &Self::Ids, n: usize) -> Result<Self::Tensor>;
}

/// Matrix products (`crate::linear`).
pub trait LinearOps: Storage {
    /// x [N, K], w [M, K], b [M] → x·wᵀ + b [N, M].
    fn linear(&self, x: &Self::Tensor, w: &Self::Tensor, b: Option<&Self::Tensor>) -> Result<Self::Tensor>;
    /// a [N, K] · b [K, M] → [N, M] (the input gradient of `linear`: dy [N, M] · w [M, K]).
    fn matmul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// aᵀ · b: a [N, M], b [N, K] → [M, K] (the weight gradient of `linear`: dyᵀ · x).
    fn matmul_tn(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
}

/// LayerNorm, fused with the residual add, and its backward (`crate::layernorm`).
pub trait LayerNormOps: Storage {
    /// LayerNorm over the last axis, biased variance: x [N, H], w [H], b [H] → [N, H].
    fn layer_norm(&self, x: &Self::Tensor, w: &Self::Tensor, b: Option<&Self::Tensor>, eps: f32) -> Result<Self::Tensor>;
    /// The residual add fused with the LayerNorm that follows it: x [N, H], y [N, H], w [H],
    /// b [H] → (x + y, LayerNorm(x + y)), both [N, H]; one pass over the rows instead of two.
    fn add_layer_norm(&self, x: &Self::Tensor, y: &Self::Tensor, w: &Self::Tensor, b: Option<&Self::Tensor>, eps: f32) -> Result<(Self::Tensor, Self::Tensor)>;
    /// Backward of `layer_norm` (no bias term: its gradient is `sum_rows(dy)`):
    /// x [N, H], w [H], dy [N, H] → (dx [N, H], dw [H]).
    fn layer_norm_backward(&self, x: &Self::Tensor, w: &Self::Tensor, dy: &Self::Tensor, eps: f32) -> Result<(Self::Tensor, Self::Tensor)>;
}

/// Element-wise ops and their backwards (`crate::elementwise`).
pub trait ElementwiseOps: Storage {
    /// Element-wise a + b, same shapes.
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// Exact (erf) GELU, element-wise.
    fn gelu(&self, x: &Self::Tensor) -> Result<Self::Tensor>;
    /// tanh, element-wise (BERT's pooler).
    fn tanh(&self, x: &Self::Tensor) -> Result<Self::Tensor>;
    /// GeGLU: u [N, 2I] → GELU(u[:, :I]) ⊙ u[:, I:] [N, I].
    fn geglu(&self, u: &Self::Tensor) -> Result<Self::Tensor>;
    /// Element-wise a · s.
    fn scale(&self, a: &Self::Tensor, s: f32) -> Result<Self::Tensor>;
    /// Backward of `gelu`: x [N], dy [N] → dx [N].
    fn gelu_backward(&self, x: &Self::Tensor, dy: &Self::Tensor) -> Result<Self::Tensor>;
    /// Backward of `tanh` from its output: y = tanh(x) [N], dy [N] → dx = dy · (1 − y²) [N].
    fn tanh_backward(&self, y: &Self::Tensor, dy: &Self::Tensor) -> Result<Self::Tensor>;
    /// Backward of `geglu`: u [N, 2I], dy [N, I] → du [N, 2I].
    fn geglu_backward(&self, u: &Self::Tensor, dy: &Self::Tensor) -> Result<Self::Tensor>;
}

/// Rotary position embedding (`crate::rope`).
pub trait RopeOps: Storage {
    /// Rotary embedding of the q and k blocks of qkv [T, 3H] (rotate-half pairing, `nh` heads),
    /// positions restarting at 0 in every sequence; cos, sin [P, hd/2] with P ≥ the longest
    /// sequence. Returns the rotated qkv [T, 3H] (v copied unchanged).
    fn rope(&self, qkv: &Self::Tensor, seqs: &Self::Seqs, cos: &Self::Tensor, sin: &Self::Tensor, nh: usize) -> Result<Self::Tensor>;
    /// Backward of `rope`: the inverse rotation of the q and k blocks of dqkv [T, 3H].
    fn rope_backward(&self, dqkv: &Self::Tensor, seqs: &Self::Seqs, cos: &Self::Tensor, sin: &Self::Tensor, nh: usize) -> Result<Self::Tensor>;
}

/// Attention within each sequence of an unpadded batch, optionally windowed (`crate::attention`).
pub trait AttentionOps: Storage {
    /// Attention over qkv [T, 3H] (RoPE already applied), `nh` heads, scale hd^-1/2; within each
    /// sequence only; `window = Some(w)` limits key j of query i to |i − j| ≤ w.
    /// Returns (out [T, H], lse [T, nh]): the row log-sum-exp is kept for the backward pass.
    fn attention(&self, qkv: &Self::Tensor, seqs: &Self::Seqs, nh: usize, window: Option<usize>) -> Result<(Self::Tensor, Self::Tensor)>;
    /// Backward of `attention`, recomputing the probabilities from the saved row log-sum-exp
    /// (no S×S buffer): qkv [T, 3H] (rotated), out [T, H] and lse [T, nh] from the forward,
    /// dout [T, H] → dqkv [T, 3H].
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        qkv: &Self::Tensor,
        out: &Self::Tensor,
        lse: &Self::Tensor,
        dout: &Self::Tensor,
        seqs: &Self::Seqs,
        nh: usize,
        window: Option<usize>,
    ) -> Result<Self::Tensor>;
}

/// Cross-entropy and label ranks (`crate::loss`).
pub trait LossOps: Storage {
    /// Per-row cross-entropy: logits [N, C], labels [N] (each < C) → loss [N] (as [N, 1]).
    fn cross_entropy(&self, logits: &Self::Tensor, labels: &Self::Ids) -> Result<Self::Tensor>;
    /// Backward of `cross_entropy` with every row weighted by `scale` (1/N for a mean):
    /// logits [N, C], labels [N] → dlogits [N, C] = scale · (softmax − onehot).
    fn cross_entropy_backward(&self, logits: &Self::Tensor, labels: &Self::Ids, scale: f32) -> Result<Self::Tensor>;
    /// Rank of each row's label among its logits, for top-k accuracy without reading the logits
    /// back: logits [N, C], labels [N] (each < C) → [N, 1], the number of classes scoring strictly
    /// higher than the label (0 = top-1), as f32 (exact below 2²⁴ classes).
    fn label_rank(&self, logits: &Self::Tensor, labels: &Self::Ids) -> Result<Self::Tensor>;
}

/// Sums over rows and over whole tensors (`crate::reduce`).
pub trait ReduceOps: Storage {
    /// Column sums: x [N, C] → [C] (bias gradients).
    fn sum_rows(&self, x: &Self::Tensor) -> Result<Self::Tensor>;
    /// Σ x² over all elements → [1, 1] (gradient norms; per-tensor sums stack with `concat_rows`).
    fn sum_squares(&self, x: &Self::Tensor) -> Result<Self::Tensor>;
}

/// The optimizer step (`crate::optim`).
pub trait OptimOps: Storage {
    /// One AdamW or StableAdamW step of a parameter tensor (see `crate::optim`): p, g, m, v of one
    /// shape → the updated (p, m, v) and, for StableAdamW, the update RMS [1].
    fn adam_step(
        &self,
        p: &Self::Tensor,
        g: &Self::Tensor,
        m: &Self::Tensor,
        v: &Self::Tensor,
        step: &AdamStep,
    ) -> Result<AdamUpdate<Self::Tensor>>;
}

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    AdamW,
    /// `max_lr`: the peak learning rate the fully decoupled weight decay is relative to.
    StableAdamW { max_lr: f64 },
}

/// One step's hyper-parameters for one tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    pub rule: Rule,
    /// This step's learning rate (after the schedule).
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// 0 for tensors that do not decay.
    pub weight_decay: f64,
    /// 1 for the first step.
    pub step: u64,
}

/// What `Backend::adam_step` returns.
#[derive(Clone)]
pub struct AdamUpdate<T> {
    pub param: T,
    pub m: T,
    pub v: T,
    /// StableAdamW's update RMS of the tensor [1]; `None` for AdamW.
    pub rms: Option<T>,
}

/// Validate `cu_seqlens`: starts at 0, strictly increasing, at least one sequence.
pub fn check_cu_seqlens(cu_seqlens: &[u32]) -> Result<()> {
    if cu_seqlens.len() < 2 || cu_seqlens[0] != 0 {
        return Err(crate::Error::shape("seqs", format!("cu_seqlens must start at 0 and describe at least one sequence, got {cu_seqlens:?}")));
    }
    if let Some(w) = cu_seqlens.windows(2).find(|w| w[1] <= w[0]) {
        return Err(crate::Error::shape("seqs", format!("cu_seqlens must be strictly increasing (empty sequences are not allowed), found {} then {}", w[0], w[1])));
    }
    Ok(())
}

/// Position of every token in its sequence: [T], restarting at 0 at each `cu_seqlens[b]`.
pub fn positions(cu_seqlens: &[u32]) -> Vec<u32> {
    cu_seqlens.windows(2).flat_map(|w| 0..w[1] - w[0]).collect()
}

/// Check the arguments of `slice_rows`: returns the column count.
pub(crate) fn check_slice(shape: &[usize], start: usize, end: usize) -> Result<usize> {
    let cols = *shape.last().unwrap_or(&1);
    let rows: usize = shape.iter().rev().skip(1).product();
    if shape.len() != 2 || start > end || end > rows {
        return Err(crate::Error::shape("slice_rows", format!("rows {start}..{end} of {shape:?}")));
    }
    Ok(cols)
}

/// Check the arguments of `concat_rows`: returns (total rows, columns).
pub(crate) fn check_concat<'a>(shapes: impl Iterator<Item = &'a [usize]>) -> Result<(usize, usize)> {
    let mut cols = None;
    let mut rows = 0;
    for s in shapes {
        if s.len() != 2 || cols.is_some_and(|c| c != s[1]) {
            return Err(crate::Error::shape("concat_rows", format!("part {s:?} does not match {cols:?} columns")));
        }
        cols = Some(s[1]);
        rows += s[0];
    }
    cols.map(|c| (rows, c)).ok_or_else(|| crate::Error::shape("concat_rows", "no parts"))
}
