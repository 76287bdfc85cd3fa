// The official openai npm client, unmodified but for its base URL and key, against aos's front
// door: a plain chat, a streamed chat, a tool-call round trip, embeddings and the model list.
// argv: PACKAGE_DIR BASE_URL KEY TOOL_KEY. Prints one JSON line of what it saw; exit 0 or 1.
"use strict";
const [pkg, baseURL, key, toolKey] = process.argv.slice(2);
const OpenAI = require(pkg);

function must(cond, what) {
  if (!cond) throw new Error(what);
}

async function main() {
  const client = new OpenAI({ baseURL, apiKey: key, maxRetries: 0 });
  const seen = {};

  const plain = await client.chat.completions.create({
    model: "sim/sim-1",
    messages: [{ role: "user", content: "hello from the openai client" }],
  });
  must(plain.choices[0].message.content.includes("hello from the openai client"), "plain text");
  must(plain.usage.total_tokens > 0, "plain usage");
  seen.plain = plain.choices[0].message.content;

  const stream = await client.chat.completions.create({
    model: "sim/sim-1",
    stream: true,
    stream_options: { include_usage: true },
    messages: [{ role: "user", content: "hello from the openai client" }],
  });
  let text = "", chunks = 0, usage = null;
  for await (const chunk of stream) {
    if (chunk.choices.length && chunk.choices[0].delta.content) {
      text += chunk.choices[0].delta.content;
      chunks++;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  must(chunks > 1 && text === seen.plain, "streamed text equals the plain one");
  must(usage && usage.total_tokens > 0, "usage in the stream");
  seen.stream_chunks = chunks;

  const tools = [{ type: "function", function: { name: "get_weather",
                   parameters: { type: "object", properties: { city: { type: "string" } } } } }];
  const tc = new OpenAI({ baseURL, apiKey: toolKey, maxRetries: 0 });
  const ask = [{ role: "user", content: "weather in Paris?" }];
  const first = await tc.chat.completions.create({ model: "tsim/t1", tools, messages: ask });
  const call = first.choices[0].message.tool_calls[0];
  must(first.choices[0].finish_reason === "tool_calls", "finish_reason tool_calls");
  must(call.function.name === "get_weather" && JSON.parse(call.function.arguments).city === "Paris",
       "the tool call");
  // the agent runs the tool itself, then sends its result back
  const second = await tc.chat.completions.create({
    model: "tsim/t1", tools,
    messages: [...ask, first.choices[0].message,
               { role: "tool", tool_call_id: call.id, content: "sunny, 21C" }],
  });
  must(second.choices[0].message.content === "It is sunny in Paris.", "the answer after the tool");
  seen.tool = second.choices[0].message.content;

  const emb = await client.embeddings.create({ model: "sim/sim-embed", input: ["a", "b c"] });
  must(emb.data.length === 2 && emb.data[0].embedding.length > 0, "embeddings");
  seen.embedding_dim = emb.data[0].embedding.length;

  const models = [];
  for await (const m of client.models.list()) models.push(m.id);
  must(models.length === 1 && models[0] === "sim/sim-1", "the model list");
  seen.models = models;

  // a refusal comes back as the SDK's own error class
  try {
    await client.chat.completions.create({ model: "tsim/t1", messages: ask });
    must(false, "another agent's model was served");
  } catch (e) {
    must(e instanceof OpenAI.PermissionDeniedError, "403 is PermissionDeniedError: " + e);
  }
  try {
    await new OpenAI({ baseURL, apiKey: "aos-wrong", maxRetries: 0 }).models.list();
    must(false, "a wrong key was served");
  } catch (e) {
    must(e instanceof OpenAI.AuthenticationError, "401 is AuthenticationError: " + e);
  }
  console.log(JSON.stringify(seen));
}

main().catch((e) => {
  console.error("openai_client.js: " + (e && e.stack ? e.stack : e));
  process.exit(1);
});
