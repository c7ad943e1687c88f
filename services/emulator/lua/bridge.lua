-- Tempest bridge: runs inside MAME (autoboot script), talks to its emulator worker.
--
-- Protocol: loopback TCP both ways (MAME is the client, the worker listens on
-- TEMPEST_BRIDGE_PORT), plus a doorbell: before each reply the worker writes one byte to the
-- named pipe TEMPEST_BRIDGE_REPLY_FIFO.  MAME's Lua sockets cannot block, so the script polls
-- the socket for a short while (a reply usually comes within microseconds, and polling avoids
-- a wake-up on every tick), then sleeps on the pipe, which costs no CPU; spinning instead
-- would starve the workers once several share the CPUs.  The pipe also returns end-of-file the
-- moment the worker dies.
--   MAME -> worker, once per game tick ($0003 changed), and once right after a save or load:
--     8-byte header: 'T', kind ('H' hello | 'S' state), flags (bit0 loaded, bit1 saved,
--                    bit2 not awaited), 0, uint32 LE video frame number;
--     then RAM $0000-$03FF (1024 bytes).
--   worker -> MAME, exactly one reply per message, in order: 4 bytes:
--     command (0 act | 1 save state | 2 load state | 3 exit), buttons (bit0 fire, bit1 zap),
--     spinner delta (int8, written to $0050 every video frame), save slot (save and load: slot 0
--     is the state named TEMPEST_BRIDGE_STATE_NAME, slot n the state named <that>-n).
-- Only game ticks are sent (~46% of video frames in play): frames where $0003 did not change
-- carry no new state.  Outside play and zoom the script drives the game itself (free play,
-- start in attract mode, fire in level select and high-score entry), so the worker's action
-- there is ignored and MAME does not wait for it: such a message is sent "not awaited" and its
-- reply is picked up on a later frame (or before the next awaited reply).  A save, load or exit
-- sent in reply to such a message therefore takes effect a frame or two later; the worker
-- confirms saves and loads by the flags of a later message, never by timing.  At most
-- MAX_UNANSWERED replies may be outstanding: beyond that MAME waits, so a worker that stops
-- reading (a paused Gymnasium user, a frozen process) stops MAME instead of overflowing the
-- socket.
-- When the worker goes away (end of file on the pipe, a failed write) MAME exits: headless
-- MAME ignores SIGTERM, so it must stop itself.

local PORT = os.getenv("TEMPEST_BRIDGE_PORT")
local REPLY_FIFO = os.getenv("TEMPEST_BRIDGE_REPLY_FIFO")
local SPIN_POLLS = tonumber(os.getenv("TEMPEST_BRIDGE_SPIN_POLLS") or "600")
local MAX_UNANSWERED = 8
-- Socket reads ask for at least half of MAME's 512-byte file buffer, so MAME reads straight into
-- our string and keeps nothing: a smaller read would leave extra replies in that buffer, and the
-- next write (core_osd_file::write) throws buffered read data away.
local READ_SIZE = 512
local STATE_NAME = os.getenv("TEMPEST_BRIDGE_STATE_NAME") or "start"

-- Protocol numbers and RAM addresses, under the names services/emulator/bridge.py and
-- tempest_common/ram_map.py give them (a unit test checks that both sides agree).
local CMD_ACT, CMD_SAVE, CMD_LOAD, CMD_EXIT = 0, 1, 2, 3
local FLAG_LOADED, FLAG_SAVED, FLAG_NOT_AWAITED = 1, 2, 4
local MODE, TICK, GAME_FLAGS, CREDITS, SPINNER = 0x0000, 0x0003, 0x0005, 0x0006, 0x0050
local MODE_PLAY, MODE_ZOOM, MODE_LEVEL_SELECT, MODE_HIGH_SCORE = 0x04, 0x20, 0x16, 0x12
local GAME_RUNNING_BIT = 0x80
local RAM_SIZE = 0x400

local machine = manager.machine
local mem = machine.devices[":maincpu"].spaces["program"]
local fire_field = machine.ioport.ports[":BUTTONSP1"].fields["P1 Button 1"]
local zap_field = machine.ioport.ports[":BUTTONSP1"].fields["P1 Button 2"]
local start_field = machine.ioport.ports[":IN2"].fields["1 Player Start"]

local sock = nil
local doorbell = nil
local video_frame = 0
local prev_tick = nil       -- last seen TICK byte; nil forces a message on the next frame
local pending_flags = 0     -- flags for the next message (loaded / saved)
local nav_frames = 0        -- frame counter for the script's own menu presses
local fire, zap, spin = 0, 0, 0
local exiting = false
local unanswered = 0      -- not-awaited messages whose replies have not been read yet
local inbox = ""          -- reply bytes received from the socket and not carried out yet
local command_frame = -1  -- video frame of the last save or load carried out

local function quit(why)
  if not exiting then
    exiting = true
    print("tempest bridge: exiting MAME: " .. why)
    machine:exit()
  end
end

local function connect()
  if PORT == nil then quit("TEMPEST_BRIDGE_PORT is not set"); return end
  sock = emu.file("rw")
  local err = sock:open("socket.127.0.0.1:" .. PORT)
  if err ~= nil then quit("cannot connect to worker on port " .. PORT .. ": " .. tostring(err)); sock = nil; return end
  if REPLY_FIFO == nil then quit("TEMPEST_BRIDGE_REPLY_FIFO is not set"); sock = nil; return end
  doorbell = io.open(REPLY_FIFO, "rb")  -- blocks until the worker opens the write end
  if doorbell == nil then quit("cannot open reply pipe " .. REPLY_FIFO); sock = nil; return end
  doorbell:setvbuf("no")
end

-- Appends whatever reply bytes have arrived to inbox; true if any did.
local function receive_available()
  local chunk = sock:read(READ_SIZE)
  if chunk == nil or #chunk == 0 then return false end
  inbox = inbox .. chunk
  return true
end

-- Takes the next 4-byte reply out of inbox (the caller takes its doorbell byte, which is in
-- the pipe before the reply reaches the socket: the worker rings first).
local function take_reply()
  local reply = string.sub(inbox, 1, 4)
  inbox = string.sub(inbox, 5)
  return reply
end

-- The next reply, waiting for it: poll the socket SPIN_POLLS times, then take the doorbell
-- byte (there already if the reply came; otherwise this sleeps until the worker rings) and
-- finish receiving the reply.  nil when the worker is gone.
local function read_reply()
  for _ = 1, SPIN_POLLS do
    if #inbox >= 4 then break end
    receive_available()
  end
  if doorbell:read(1) == nil then return nil end
  local deadline = os.time() + 10
  while #inbox < 4 do
    if not receive_available() and os.time() > deadline then return nil end
  end
  return take_reply()
end

-- The next reply if it has fully arrived, else nil (never blocks).
local function poll_reply()
  if #inbox < 4 then receive_available() end
  if #inbox < 4 then return nil end
  if doorbell:read(1) == nil then quit("the worker went away"); return nil end
  return take_reply()
end

local function neutral_inputs()
  fire, zap, spin = 0, 0, 0
  fire_field:set_value(0); zap_field:set_value(0); start_field:set_value(0)
end

-- Carries out one reply; use_inputs is false for replies to not-awaited messages (MAME drives
-- the game itself there) and once a save or load has just happened.  Returns false on exit.
local function carry_out(reply, use_inputs)
  local cmd, buttons, spinner, slot = string.unpack("<BBbB", reply)
  if cmd == CMD_EXIT then quit("worker asked to exit"); return false end
  if cmd == CMD_SAVE or cmd == CMD_LOAD then
    -- Determinism: inputs neutral on the frame of the call, and the tick detector and the
    -- menu counter restart at the same point after a save and after a load.
    neutral_inputs()
    local name = slot == 0 and STATE_NAME or (STATE_NAME .. "-" .. slot)
    if cmd == CMD_SAVE then machine:save(name); pending_flags = FLAG_SAVED
    else machine:load(name); pending_flags = FLAG_LOADED end
    prev_tick = nil
    nav_frames = 0
    command_frame = video_frame
    return true
  end
  if use_inputs then
    fire = buttons & 1
    zap = (buttons >> 1) & 1
    spin = spinner
  end
  return true
end

-- Reads replies to not-awaited messages until at most `keep` are outstanding: blocking when
-- wait is true, else only those that have arrived.  Returns false when the worker is gone or
-- asked to exit.
local function catch_up(wait, keep)
  while unanswered > keep do
    local reply
    if wait then
      reply = read_reply()
      if reply == nil then quit("the worker went away"); return false end
    else
      reply = poll_reply()
      if reply == nil then return not exiting end
    end
    unanswered = unanswered - 1
    if not carry_out(reply, false) then return false end
  end
  return true
end

-- Sends one message; when awaited, also reads every reply up to and including its own.
-- Returns false when the worker is gone or asked to exit.
local function exchange(kind, awaited)
  if not awaited and unanswered >= MAX_UNANSWERED then
    if not catch_up(true, MAX_UNANSWERED - 1) then return false end
    if command_frame == video_frame then return true end  -- its message goes out next frame
  end
  local flags = pending_flags | (awaited and 0 or FLAG_NOT_AWAITED)
  local header = string.pack("<c1c1BBI4", "T", kind, flags, 0, video_frame)
  pending_flags = 0
  local ok = pcall(function() sock:write(header .. mem:read_range(0, RAM_SIZE - 1, 8)) end)
  if not ok then quit("write to worker failed"); return false end
  if not awaited then
    fire, zap, spin = 0, 0, 0   -- what a neutral reply would set: play resumes from no input
    unanswered = unanswered + 1
    return true
  end
  if not catch_up(true, 0) then return false end
  local commanded = pending_flags ~= 0  -- a save or load from an earlier reply just happened
  local reply = read_reply()
  if reply == nil then quit("the worker went away"); return false end
  return carry_out(reply, not commanded)
end

-- Outside play the game needs a start press (attract) or fire (level select, high scores).
local function navigate(mode)
  nav_frames = nav_frames + 1
  local attract = (mem:read_u8(GAME_FLAGS) & GAME_RUNNING_BIT) == 0
  start_field:set_value((attract and nav_frames % 50 < 5) and 1 or 0)
  local press = (mode == MODE_LEVEL_SELECT or mode == MODE_HIGH_SCORE) and nav_frames % 20 < 3
  fire_field:set_value(press and 1 or 0)
  zap_field:set_value(0)
end

local function on_frame()
  if exiting then return end
  if sock == nil then connect(); if sock == nil then return end
    if not exchange("H", true) then return end
  end
  video_frame = video_frame + 1
  mem:write_u8(CREDITS, 2)  -- free play: credits always available
  if unanswered > 0 then
    if not catch_up(false, 0) then return end
    if command_frame == video_frame then return end  -- a late save or load just happened
  end
  local mode = mem:read_u8(MODE)
  local in_play = mode == MODE_PLAY or mode == MODE_ZOOM
  local tick = mem:read_u8(TICK)
  if tick ~= prev_tick then
    prev_tick = tick
    if not exchange("S", in_play) then return end
    if command_frame == video_frame then return end  -- a save or load was just scheduled
  end
  if in_play then
    start_field:set_value(0)
    fire_field:set_value(fire)
    zap_field:set_value(zap)
    mem:write_u8(SPINNER, spin & 0xFF)
  else
    navigate(mode)
  end
end

emu.register_frame_done(on_frame, "tempest_bridge")
