// transformers.web.js does `import { Tensor } from "onnxruntime-common"`; ONNX Runtime Web bundles
// its own copy of onnxruntime-common, and checks `instanceof` against that one, so re-export it.
export * from 'onnxruntime-web/webgpu';
