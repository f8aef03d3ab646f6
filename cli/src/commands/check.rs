//! `runtime-cli check`: the model against transformers' reference tensors, under the dtypes' tolerance.

use std::path::Path;

use kernels::Backend;
use runtime::check::check;
use runtime::folder::ModelFolder;
use runtime::weights::Checkpoint;
use runtime::Model;

use super::{device_name, Outcome};

pub fn run_check<B: Backend>(be: &B, model: &Path, reference: &Path, tol: Option<f32>) -> Outcome {
    let mut criterion = kernels::tolerance::parity_with_activations(be.dtype(), be.activation_dtype());
    if let Some(t) = tol {
        criterion.limit = t;
    }
    let folder = ModelFolder::open(model)?;
    let reference = Checkpoint::open_file(reference)?;
    let model = runtime::check::load_for_check(be, folder.config, &folder.checkpoint, &reference)?;
    let report = kernels::block_on(check(be, &model, &reference))?;
    println!("device: {} ({})", device_name(be), be.dtype().name());
    if let Model::Bert(runtime::Bert { pooler_source: Some(from), .. }) = &model {
        println!("pooler: from the reference file {from} (the checkpoint has none)");
    }
    let worst = report.max_err(criterion.scale);
    let ok = worst <= criterion.limit;
    println!(
        "criterion: {} ≤ {:e} for {} weights, {} activations: {worst:.3e}, {}",
        criterion.scale.describe(),
        criterion.limit,
        be.dtype().name(),
        be.activation_dtype().name(),
        if ok { "pass" } else { "FAIL" }
    );
    print!("{}", report.render());
    if !ok {
        eprintln!("error: an error exceeds the tolerance {:e} ({})", criterion.limit, criterion.scale.describe());
    }
    Ok(ok)
}
