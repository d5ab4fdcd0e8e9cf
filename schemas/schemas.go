// Package schemas embeds the JSON Schema of the pipeline file so the binary validates with the very file editors use.
package schemas

import _ "embed"

// Pipeline is schemas/pipeline.schema.json as built into the binary.
//
//go:embed pipeline.schema.json
var Pipeline []byte

// PipelineURL is the $id of the pipeline schema.
const PipelineURL = "https://pipectl.dev/schemas/pipeline.schema.json"

// PipelineTest is schemas/pipeline-test.schema.json, the schema of *.test.yaml files, for
// editors.
//
//go:embed pipeline-test.schema.json
var PipelineTest []byte
