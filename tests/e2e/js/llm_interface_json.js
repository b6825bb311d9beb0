// npm llm-interface's DeepInfra provider in JSON mode, pointed at an inferd server:
//   INFERD_URL=http://127.0.0.1:8000 INFERD_TOKEN=... node llm_interface_json.js
// Prints one JSON line per answer: {"ok": true, "results": <what llm-interface returned>}.
// (llm-interface maps its own aliases — default, small, agent — to DeepInfra's model names
// before sending, so the model is named here.)
const { LLMInterface } = require('llm-interface');
const { getConfig, loadProviderConfig } = require('llm-interface/src/utils/configManager.js');

async function main() {
  loadProviderConfig('deepinfra');
  getConfig().deepinfra.url = `${process.env.INFERD_URL}/v1/openai/chat/completions`;
  LLMInterface.setApiKey({ deepinfra: process.env.INFERD_TOKEN });
  for (const prompt of ['Describe Paris as a JSON object.', 'List three colours in a JSON object.']) {
    const response = await LLMInterface.sendMessage('deepinfra', prompt,
      { max_tokens: 60, response_format: 'json_object', model: 'HuggingFaceTB/SmolLM2-135M-Instruct' });
    console.log(JSON.stringify({ ok: true, results: response.results }));
  }
}

main().catch((error) => { console.log(JSON.stringify({ ok: false, error: String(error) })); process.exit(1); });
