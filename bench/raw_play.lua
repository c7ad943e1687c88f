-- Benchmark baseline: keeps Tempest in play with no socket and no worker (bench/emulator.py).
-- Free play, start in attract mode, fire in level select / high-score entry, steady fire in
-- play.  Prints "tempest-raw <video frame> <game ticks in play>" every 50 video frames once
-- play has started, so the benchmark can time only frames in play.
local machine = manager.machine
local mem = machine.devices[":maincpu"].spaces["program"]
local fire_field = machine.ioport.ports[":BUTTONSP1"].fields["P1 Button 1"]
local start_field = machine.ioport.ports[":IN2"].fields["1 Player Start"]
local frames, nav, ticks, prev_tick, playing = 0, 0, 0, nil, false
emu.register_frame_done(function()
  frames = frames + 1
  mem:write_u8(0x0006, 2)
  local gs = mem:read_u8(0x0000)
  local tick = mem:read_u8(0x0003)
  if tick ~= prev_tick then
    prev_tick = tick
    if gs == 0x04 or gs == 0x20 then ticks = ticks + 1 end
  end
  if gs == 0x04 then playing = true end
  if gs == 0x04 or gs == 0x20 then
    start_field:set_value(0)
    fire_field:set_value((frames % 4 < 2) and 1 or 0)
  else
    nav = nav + 1
    local attract = (mem:read_u8(0x0005) & 0x80) == 0
    start_field:set_value((attract and nav % 50 < 5) and 1 or 0)
    fire_field:set_value(((gs == 0x16 or gs == 0x12) and nav % 20 < 3) and 1 or 0)
  end
  if playing and frames % 50 == 0 then
    print(string.format("tempest-raw %d %d", frames, ticks))
    io.stdout:flush()
  end
end, "tempest_raw")
