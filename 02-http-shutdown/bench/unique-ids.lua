-- wrk script: every request carries a new id, as the load checker's do.
-- Each wrk thread gets its own prefix so ids never repeat across threads.
local counter = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("prefix", "t" .. threads .. "-")
end

function request()
  counter = counter + 1
  -- An empty body, so the request says "Content-Length: 0": a POST without
  -- it makes the server read a body until its read timeout.
  return wrk.format("POST", "/incr?id=" .. prefix .. counter, nil, "")
end
